//! Crash consistency for real: the server is SIGKILLed at random moments while a random workload with
//! fsync markers runs on the mount (`commit=1`, so timer commits race the kill too). After each kill the
//! image is mounted again (ext4box replays the journal), every file whose fsync had returned must hold
//! exactly its content, and after the unmount `e2fsck -fn` must be clean. `KILLS=n` sets the number of
//! kill points (50 by default), `SEED=n` the random stream. Needs root and /dev/fuse.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

/// Files whose fsync returned: name → content.
type Synced = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Runs until an operation fails (the server is gone) or `limit` operations are done.
fn workload(mnt: PathBuf, round: usize, mut rng: u64, synced: Synced, limit: usize) {
    let mut churn: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![mnt.clone()];
    let mut run = || -> std::io::Result<()> {
        for i in 0..limit {
            match xorshift(&mut rng) % 16 {
                0..=4 => {
                    let dir = &dirs[(xorshift(&mut rng) % dirs.len() as u64) as usize];
                    let p = dir.join(format!("c{round}_{i}"));
                    let len = (xorshift(&mut rng) % 48_000) as usize;
                    fs::write(&p, pseudo_random(rng, len))?;
                    churn.push(p);
                }
                5 => {
                    let p = mnt.join(format!("d{round}_{i}"));
                    fs::create_dir(&p)?;
                    dirs.push(p);
                }
                6..=9 if !churn.is_empty() => {
                    let p = churn.swap_remove((xorshift(&mut rng) % churn.len() as u64) as usize);
                    fs::remove_file(p)?;
                }
                10 | 11 if !churn.is_empty() => {
                    let n = (xorshift(&mut rng) % churn.len() as u64) as usize;
                    let dir = &dirs[(xorshift(&mut rng) % dirs.len() as u64) as usize];
                    let to = dir.join(format!("r{round}_{i}"));
                    fs::rename(&churn[n], &to)?;
                    churn[n] = to;
                }
                12 | 13 if !churn.is_empty() => {
                    let p = &churn[(xorshift(&mut rng) % churn.len() as u64) as usize];
                    fs::OpenOptions::new().write(true).open(p)?.set_len(xorshift(&mut rng) % 30_000)?;
                }
                14 | 15 if !xorshift(&mut rng).is_multiple_of(4) && !churn.is_empty() => {
                    let p = &churn[(xorshift(&mut rng) % churn.len() as u64) as usize];
                    let mut f = fs::OpenOptions::new().write(true).open(p)?;
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(xorshift(&mut rng) % 60_000))?;
                    f.write_all(&pseudo_random(rng, 1 + (xorshift(&mut rng) % 9000) as usize))?;
                }
                _ => {
                    // A file written once and fsynced: it must survive any later kill exactly so.
                    let name = format!("s{round}_{i}");
                    let content = pseudo_random(rng ^ i as u64, (xorshift(&mut rng) % 6000) as usize);
                    let mut f = fs::File::create(mnt.join(&name))?;
                    f.write_all(&content)?;
                    f.sync_all()?;
                    synced.lock().unwrap().push((name, content));
                }
            }
        }
        Ok(())
    };
    let _ = run();
}

fn verify(mnt: &Path, synced: &Synced, what: &str) {
    for (name, content) in synced.lock().unwrap().iter() {
        let got = fs::read(mnt.join(name)).unwrap_or_else(|e| panic!("{what}: fsynced {name} is gone: {e}"));
        assert!(
            got == *content,
            "{what}: fsynced {name} has {} bytes, not its {} fsynced ones",
            got.len(),
            content.len()
        );
    }
}

#[test]
fn sigkilled_server_replays_to_a_clean_image_with_every_fsynced_file() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let kills: usize = std::env::var("KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let mut rng: u64 = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xD15EA5E);
    let s = Scratch::new("crash-kill");
    let img = s.path("img");
    mkfs(&img, 256 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let synced: Synced = Arc::new(Mutex::new(Vec::new()));
    let mut committed_before_kill = 0;
    for round in 0..kills {
        let m = ext4box_mount_ok(&img, &mnt, "commit=1");
        let worker = worker_pid(&mnt).expect("no worker process");
        let seed = xorshift(&mut rng);
        let before = synced.lock().unwrap().len();
        // The workload reaches the mount through a descriptor of its root, never through the mount
        // point's path: once the worker is dead the supervisor detaches the mount, and a path would then
        // name the directory underneath, where creates, writes and fsyncs all succeed (the io_uring
        // transport's teardown leaves time for a few; the test then counted files it wrote beside the
        // image as fsynced to it).
        let root = fs::File::open(&mnt).expect("open the mount's root");
        let handle = {
            let (top, synced) = (PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd())), synced.clone());
            std::thread::spawn(move || workload(top, round, seed, synced, 100_000))
        };
        // Kill at a random moment: early in the workload, during it, across timer commits.
        std::thread::sleep(Duration::from_millis(xorshift(&mut rng) % 1200));
        unsafe { libc::kill(worker, libc::SIGKILL) };
        handle.join().expect("workload thread");
        drop(root);
        let after = synced.lock().unwrap().len();
        committed_before_kill += after - before;
        // The supervisor detaches the mount of a dead worker and exits.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while m.pids.iter().any(|&p| pid_alive(p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(m.pids.iter().all(|&p| !pid_alive(p)), "round {round}: the killed mount's processes linger");
        if mountinfo_entry(&mnt).is_some() {
            run_ok(std::process::Command::new("umount").arg("-l").arg(&mnt));
        }
        let what = format!("after kill {round} (seed {seed})");
        let beneath: Vec<_> = fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(beneath.is_empty(), "{what}: the workload wrote beside the image, under the mount point: {beneath:?}");
        let m = ext4box_mount_ok(&img, &mnt, "");
        verify(&mnt, &synced, &what);
        m.unmount();
        let out = std::process::Command::new("e2fsck").arg("-fn").arg(&img).output().unwrap();
        assert!(out.status.success(), "{what}: e2fsck -fn:\n{}", output_text(&out));
    }
    eprintln!("{kills} kills, {committed_before_kill} fsynced files checked after each later kill");
    assert!(committed_before_kill >= kills, "too few fsyncs returned before the kills to test anything");
}
