//! The `peernet` binary; everything is in the library.

fn main() -> std::process::ExitCode {
    peernet::main_from(std::env::args_os())
}
