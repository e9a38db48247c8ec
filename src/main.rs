fn main() {
    std::process::exit(ext4box::cli::main());
}
