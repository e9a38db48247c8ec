//! What `-o format=` may name, and why an image's virtual disk cannot be opened, for every format's reader: damaged metadata, a version
//! or variant this reader does not serve, a disk whose data lives in other files (to be joined or
//! converted first), or an image that could not be read. Each says itself in the one line the mount
//! prints; the variants let callers and tests tell them apart.

use std::io;

/// A `-o format=` value that names no format ext4box serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatNameError {
    /// No such format.
    #[error("format={0}: auto, raw, qcow2, vmdk, vhdx or sparse")]
    Unknown(String),
    /// A format that is known but not served (vpc, vhd, vdi).
    #[error("format={0}: {0} images are not supported yet; convert one first: qemu-img convert -O raw IMAGE image.raw")]
    NotServed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image's magic number shows a format that is known but not served.
    #[error(
        "the image is a {0} images are not supported yet; convert one first: qemu-img convert -O raw IMAGE image.raw"
    )]
    ImageNotServed(&'static str),
    /// The image is a VMDK descriptor file: its data is in the extent file(s) it names.
    #[error("{}", vmdk_descriptor(extent.as_ref()))]
    VmdkDescriptor {
        /// The one extent file, and whether it is a flat (raw) one; `None` for several or a delta link.
        extent: Option<(String, bool)>,
    },
    /// A raw image was handed to the virtual-disk opener.
    #[error("a raw image has no virtual disk to open")]
    NoVirtualDisk,
    /// `-o offset=`/the partition ends past the virtual disk.
    #[error("the partition or offset lies past the end of the image's virtual disk")]
    WindowPastEnd,
    /// The image file could not be read.
    #[error("cannot read the image: {0}")]
    Unreadable(#[source] io::Error),
    /// The qcow2 header could not be read.
    #[error("cannot read the qcow2 header: {0}")]
    Qcow2Header(#[source] io::Error),
    /// imago refused the qcow2 image (a backing or external data file, an unknown incompatible feature,
    /// damaged tables).
    #[error("cannot open the qcow2 image: {0}")]
    Qcow2(#[source] io::Error),
    /// The format's metadata contradicts itself or the image: which format, and what is wrong.
    #[error("the {format} image is damaged: {what}")]
    Damaged { format: &'static str, what: String },
    /// A format version this reader does not know.
    #[error("{format} version {version} is not supported ({supported})")]
    Version { format: &'static str, version: u32, supported: &'static str },
    /// VMDK compression other than deflate with grain markers.
    #[error("VMDK compression {0} without grain markers is not supported (only deflate with markers is)")]
    VmdkCompression(u16),
    /// A VHDX whose log was not replayed: its metadata is not yet where it belongs.
    #[error(
        "the VHDX image's log holds changes not yet written in place (it was not closed cleanly); let Hyper-V \
         or `qemu-img check -r all IMAGE` replay it first"
    )]
    VhdxLogNotReplayed,
    /// A VHDX differencing disk: its parent would have to be opened by name.
    #[error(
        "the VHDX image is a differencing disk: its parent would have to be opened by name; join them first: \
         qemu-img convert -O raw IMAGE image.raw"
    )]
    VhdxDifferencing,
    /// A VHDX region or metadata item marked required that this reader does not know.
    #[error("the VHDX image needs a {0} this reader does not know")]
    VhdxUnknownRequired(&'static str),
    /// A VMDK delta link: its parent would have to be opened by name.
    #[error(
        "the VMDK image is a delta link: its parent disk would have to be opened by name; join them first: \
         qemu-img convert -O raw IMAGE image.raw"
    )]
    VmdkDeltaLink,
    /// A VMDK extent that is one of several files.
    #[error("the VMDK image is one of {0} extent files; join them first: qemu-img convert -O raw DESCRIPTOR image.raw")]
    VmdkSplit(usize),
}

fn vmdk_descriptor(extent: Option<&(String, bool)>) -> String {
    match extent {
        Some((name, true)) => format!(
            "the image is a VMDK descriptor; its data is the raw extent file \"{name}\" beside it: mount that file"
        ),
        Some((name, false)) => {
            format!("the image is a VMDK descriptor; its data is the extent file \"{name}\" beside it: mount that file")
        }
        None => "the image is a VMDK descriptor of several files or a delta link; join them first: qemu-img convert \
                 -O raw DESCRIPTOR image.raw"
            .into(),
    }
}
