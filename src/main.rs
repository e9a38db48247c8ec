fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Called as mount.fuse.ext4box or umount.fuse.ext4box (by mount(8) and umount(8)): their conventions.
    if let Some(helper) = args.first().and_then(|a| ext4box::mount_helper::helper_for(a)) {
        ext4box::cli::init_logging(false, tracing::Level::WARN);
        std::process::exit(ext4box::mount_helper::run(helper, &args[1..]));
    }
    std::process::exit(ext4box::cli::main());
}
