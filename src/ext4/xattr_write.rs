//! Writing extended attributes: set and remove, in the inode body first and in one external block for
//! what does not fit, with the block's reference count honoured (a shared block is copied, not changed);
//! with `ea_inode`, a value that fits neither goes into an EA inode of its own (see `ea_inode`).
//!
//! Sizes and offsets are checked: an area that would need more room than a `usize` holds does not fit,
//! like one that is merely too small.

use super::bytes::le32;
use super::bytes_mut::{put8, put16, put32};
use super::checksum::crc32c;
use super::ea_inode;
use super::error::{Error, Object, Result};
use super::features::INCOMPAT_EA_INODE;
use super::inode::Inode;
use super::txn::Txn;
use super::xattr::{self, BLOCK_CHECKSUM, BLOCK_HEADER, ENTRY_HEADER, Entry, INDEX_SYSTEM, Value, XATTR_MAGIC};

/// `XATTR_CREATE` and `XATTR_REPLACE` from setxattr(2).
pub const XATTR_CREATE: i32 = libc::XATTR_CREATE;
pub const XATTR_REPLACE: i32 = libc::XATTR_REPLACE;

/// `n` rounded up to a multiple of 4 (entries and values are 4-byte aligned). A size too large to round
/// saturates: it fits no area, which is what [`layout`] then finds.
fn round4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn entry_size(e: &Entry) -> usize {
    round4(ENTRY_HEADER.saturating_add(e.name.len()))
}

fn value_size(e: &Entry) -> usize {
    match &e.value {
        Value::Stored(v) => round4(v.len()),
        Value::EaInode { .. } => 0,
    }
}

/// The kernel's `ext4_xattr_hash_entry`: name bytes, then the value's 32-bit words. An EA-inode entry
/// keeps the hash it was given (made of the EA inode's hash by [`hash_entry`]).
fn entry_hash(e: &Entry) -> u32 {
    match &e.value {
        Value::Stored(v) => hash_entry(&e.name, v),
        Value::EaInode { .. } => e.hash,
    }
}

/// The entry hash of `name` with `value` (zero-padded to whole 32-bit words). The kernel's
/// `(h << 5) ^ (h >> 27)` and `(h << 16) ^ (h >> 16)` are rotations.
fn hash_entry(name: &[u8], value: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = h.rotate_left(5) ^ u32::from(c);
    }
    let mut padded = value.to_vec();
    padded.resize(round4(value.len()), 0);
    for w in padded.chunks_exact(4) {
        h = h.rotate_left(16) ^ le32(w, 0);
    }
    h
}

/// Lays `entries` out in an area of `len` bytes whose entries start at `start`, with values packed from
/// the end; value offsets count from `base`. `None` when they do not fit.
fn layout(entries: &[Entry], len: usize, start: usize, base: usize, hashes: bool) -> Option<Vec<u8>> {
    // The entries, the 4-byte end marker after them, and the values.
    let mut sizes = entries.iter().flat_map(|e| [entry_size(e), value_size(e)]);
    let need = sizes.try_fold(start.checked_add(4)?, usize::checked_add)?;
    if need > len {
        return None;
    }
    // Everything below lies inside the `len` bytes just checked: the entries from `start` up, the values
    // from `len` down, without meeting.
    let mut b = vec![0u8; len];
    let mut pos = start;
    let mut vend = len;
    for e in entries {
        let (value_offs, value_ino, value_size) = match &e.value {
            Value::Stored(v) => {
                vend = vend.checked_sub(round4(v.len()))?;
                b.get_mut(vend..)?.get_mut(..v.len())?.copy_from_slice(v);
                let offs = if v.is_empty() { 0 } else { u16::try_from(vend.checked_sub(base)?).ok()? };
                (offs, 0, u32::try_from(v.len()).ok()?)
            }
            Value::EaInode { ino, size } => (0, *ino, *size),
        };
        // In the inode body a stored value's hash may be 0 (the kernel does not check it there); an
        // EA-inode entry's is always checked.
        let ea = matches!(e.value, Value::EaInode { .. });
        let ent = b.get_mut(pos..)?;
        put8(ent, 0, u8::try_from(e.name.len()).ok()?);
        put8(ent, 1, e.index);
        put16(ent, 2, value_offs);
        put32(ent, 4, value_ino);
        put32(ent, 8, value_size);
        put32(ent, 12, if hashes || ea { entry_hash(e) } else { 0 });
        ent.get_mut(ENTRY_HEADER..)?.get_mut(..e.name.len())?.copy_from_slice(&e.name);
        pos = pos.checked_add(entry_size(e))?;
    }
    Some(b)
}

/// The in-inode area for `entries` (all zero when there are none).
fn encode_ibody(entries: &[Entry], area_len: usize) -> Option<Vec<u8>> {
    if entries.is_empty() {
        return Some(vec![0; area_len]);
    }
    if area_len < 8 {
        return None;
    }
    let mut b = layout(entries, area_len, 4, 4, false)?;
    put32(&mut b, 0, XATTR_MAGIC);
    Some(b)
}

/// An attribute block for `entries`, sorted as the kernel searches them, with its hashes; the checksum is
/// added by [`seal_block`] once the block's number is known.
fn encode_block(entries: &mut [Entry], bs: usize, refcount: u32) -> Option<Vec<u8>> {
    entries.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    let mut b = layout(entries, bs, BLOCK_HEADER, 0, true)?;
    put32(&mut b, 0, XATTR_MAGIC);
    put32(&mut b, 4, refcount);
    put32(&mut b, 8, 1);
    // ext4_xattr_rehash: the block hash folds the entry hashes (0 if any entry has none).
    let mut h: u32 = 0;
    for e in entries.iter() {
        let eh = entry_hash(e);
        if eh == 0 {
            h = 0;
            break;
        }
        h = h.rotate_left(16) ^ eh;
    }
    put32(&mut b, 12, h);
    Some(b)
}

/// `i_blocks` grown by `n` sectors. It was read as at most 48 bits times a block's 128 sectors, and a
/// charge is a few clusters: the sum stays far below `u64::MAX`, so saturation never happens.
fn add_sectors(blocks_512: u64, n: u64) -> u64 {
    blocks_512.saturating_add(n)
}

fn seal_block(tx: &Txn<'_>, nr: u64, b: &mut [u8]) {
    let sb = &tx.fs().sb;
    if sb.has_metadata_csum() {
        put32(b, BLOCK_CHECKSUM, 0);
        let c = crc32c(crc32c(sb.csum_seed(), &nr.to_le_bytes()), b);
        put32(b, BLOCK_CHECKSUM, c);
    }
}

fn block_entries(tx: &Txn<'_>, inode: &Inode) -> Result<(Vec<Entry>, u32)> {
    if inode.file_acl == 0 {
        return Ok((Vec::new(), 0));
    }
    let obj = Object::XattrBlock(inode.file_acl);
    let block = tx.fs().meta_block(inode.file_acl, obj)?;
    let seed = tx.fs().sb.has_metadata_csum().then(|| tx.fs().sb.csum_seed());
    Ok((xattr::parse_block(&block, inode.file_acl, seed, obj)?, le32(&block, 4)))
}

/// The EA inodes `entries` name.
fn ea_inodes(entries: &[Entry]) -> impl Iterator<Item = u32> + '_ {
    entries.iter().filter_map(|e| match e.value {
        Value::EaInode { ino, .. } => Some(ino),
        Value::Stored(_) => None,
    })
}

/// Drops every attribute of `inode` that lies outside its body: its reference to the attribute block,
/// and the references its entries (and the block's, with the block's last reference) hold to EA
/// inodes. For an inode being deleted.
pub fn release_all(tx: &mut Txn<'_>, inode: &mut Inode) -> Result<()> {
    // An EA inode holds no attributes of its own: entries a damaged one has are not followed (one naming
    // itself would otherwise delete it again and again).
    if tx.fs().sb.has_incompat(INCOMPAT_EA_INODE) && !inode.has_flag(super::inode::flags::EA_INODE) {
        let ibody = xattr::parse_ibody(&inode.xattr_area, Object::Xattr(inode.ino.0))?;
        let (blk, refcount) = block_entries(tx, inode)?;
        let mut named: Vec<u32> = ea_inodes(&ibody).collect();
        // Every entry naming an EA inode counts as one of the owner's inodes, in a shared block too.
        let entries = named.len().checked_add(ea_inodes(&blk).count());
        let uncharge = entries.and_then(|n| i64::try_from(n).ok()).and_then(i64::checked_neg).ok_or(Error::Range)?;
        tx.charge_ea_inodes(inode, uncharge)?;
        if refcount <= 1 {
            named.extend(ea_inodes(&blk));
        }
        for ino in named {
            ea_inode::drop_ref(tx, ino)?;
        }
    }
    release_block(tx, inode)
}

/// Drops `inode`'s reference to its attribute block (freeing the block with the last reference).
pub fn release_block(tx: &mut Txn<'_>, inode: &mut Inode) -> Result<()> {
    if inode.file_acl == 0 {
        return Ok(());
    }
    let nr = inode.file_acl;
    let obj = Object::XattrBlock(nr);
    let mut block = tx.block(nr, obj)?;
    let refs = le32(&block, 4);
    if refs <= 1 {
        tx.free_blocks(nr, 1)?;
    } else {
        // refs > 1 here.
        put32(&mut block, 4, refs.saturating_sub(1));
        seal_block(tx, nr, &mut block);
        tx.put(nr, block);
    }
    inode.file_acl = 0;
    inode.blocks_512 = inode.blocks_512.saturating_sub(tx.fs().sb.cluster_sectors());
    Ok(())
}

/// Removes `system.data` (inline data beyond `i_block`) from the inode body.
pub fn remove_system_data(inode: &mut Inode, obj: Object) -> Result<()> {
    let mut entries = xattr::parse_ibody(&inode.xattr_area, obj)?;
    entries.retain(|e| !(e.index == INDEX_SYSTEM && e.name == b"data"));
    inode.xattr_area = encode_ibody(&entries, inode.xattr_area.len()).ok_or(Error::NoSpace)?;
    Ok(())
}

/// Sets (`Some`) or removes (`None`) attribute `index`/`name` of `inode`, as setxattr(2)/removexattr(2)
/// with `flags`. The caller writes the inode.
pub fn set(
    tx: &mut Txn<'_>,
    inode: &mut Inode,
    index: u8,
    name: &[u8],
    value: Option<&[u8]>,
    flags: i32,
) -> Result<()> {
    let obj = Object::Xattr(inode.ino.0);
    if name.len() > 255 {
        return Err(Error::Range);
    }
    let mut ibody = xattr::parse_ibody(&inode.xattr_area, obj)?;
    let (mut blk, refcount) = block_entries(tx, inode)?;
    let matches = |e: &Entry| e.index == index && e.name == name;
    let in_body = ibody.iter().position(matches);
    let in_block = blk.iter().position(matches);
    let exists = in_body.is_some() || in_block.is_some();
    if flags & XATTR_CREATE != 0 && exists {
        return Err(Error::Exists);
    }
    if (flags & XATTR_REPLACE != 0 || value.is_none()) && !exists {
        return Err(Error::NoAttr);
    }
    // An EA inode the old value was in loses this entry's reference (one in a shared block keeps the
    // block's, which stays with the other inodes).
    if let Some(Value::EaInode { size, .. }) =
        in_body.map(|i| &ibody[i]).or(in_block.map(|i| &blk[i])).map(|e| &e.value)
    {
        inode.blocks_512 = inode.blocks_512.saturating_sub(ea_inode::owner_charge(*size, &tx.fs().sb));
        tx.charge_ea_inodes(inode, -1)?;
    }
    let old_ea = match (in_body.map(|i| &ibody[i]), in_block.map(|i| &blk[i])) {
        (Some(e), _) => ea_inodes(std::slice::from_ref(e)).next(),
        (None, Some(e)) if refcount <= 1 => ea_inodes(std::slice::from_ref(e)).next(),
        _ => None,
    };
    if let Some(i) = in_body {
        ibody.remove(i);
    }
    let block_changed = in_block.is_some();
    if let Some(i) = in_block {
        blk.remove(i);
    }
    let area_len = inode.xattr_area.len();
    let bs = super::bytes::index(tx.fs().block_size());
    let mut block_changed = block_changed;
    let mut new_ea = None;
    if let Some(v) = value {
        let mut e = Entry { index, name: name.to_vec(), value: Value::Stored(v.to_vec()), hash: 0 };
        // Where `e` fits: `Some(false)` in the body, `Some(true)` in the block (then added to either).
        let fits = |ibody: &mut Vec<Entry>, blk: &mut Vec<Entry>, e: &Entry| {
            ibody.push(e.clone());
            if encode_ibody(ibody, area_len).is_some() {
                return Some(false);
            }
            ibody.pop();
            blk.push(e.clone());
            if encode_block(&mut blk.clone(), bs, 1).is_some() {
                return Some(true);
            }
            blk.pop();
            None
        };
        let mut placed = fits(&mut ibody, &mut blk, &e);
        if placed.is_none() {
            if !tx.fs().sb.has_incompat(INCOMPAT_EA_INODE) || v.is_empty() {
                return Err(Error::NoSpace);
            }
            // Too large for the body and the block: the value gets an inode of its own.
            let size = u32::try_from(v.len()).map_err(|_| Error::Range)?;
            let (ino, hash) = ea_inode::create(tx, inode, v)?;
            e.value = Value::EaInode { ino: ino.0, size };
            e.hash = hash_entry(&e.name, &hash.to_le_bytes());
            placed = fits(&mut ibody, &mut blk, &e);
            new_ea = Some(ino.0);
            inode.blocks_512 = add_sectors(inode.blocks_512, ea_inode::owner_charge(size, &tx.fs().sb));
            tx.charge_ea_inodes(inode, 1)?;
        }
        block_changed |= placed.ok_or(Error::NoSpace)?;
    }
    inode.xattr_area = encode_ibody(&ibody, area_len).ok_or(Error::NoSpace)?;
    if let Some(ino) = old_ea {
        ea_inode::drop_ref(tx, ino)?;
    }
    if !block_changed {
        return Ok(());
    }
    if blk.is_empty() {
        return release_block(tx, inode);
    }
    if inode.file_acl != 0 && refcount > 1 {
        // The shared block is copied for this inode: the copy's entries hold references of their own.
        let copied: Vec<u32> = ea_inodes(&blk).filter(|&i| Some(i) != new_ea).collect();
        for ino in copied {
            ea_inode::add_ref(tx, ino)?;
        }
    }
    let mut new = encode_block(&mut blk, bs, 1).ok_or(Error::NoSpace)?;
    let nr = if inode.file_acl != 0 && refcount <= 1 {
        inode.file_acl
    } else {
        // No block yet, or one shared with other inodes: this inode gets a block of its own.
        release_block(tx, inode)?;
        let sb = &tx.fs().sb;
        let group = inode.ino.0.saturating_sub(1).checked_div(sb.inodes_per_group).unwrap_or(0);
        let goal = inode.file_acl.max(sb.group_first_block(u64::from(group)));
        let nr = tx.alloc_meta_block(goal)?;
        inode.file_acl = nr;
        inode.blocks_512 = add_sectors(inode.blocks_512, tx.fs().sb.cluster_sectors());
        nr
    };
    seal_block(tx, nr, &mut new);
    tx.put(nr, new);
    Ok(())
}
