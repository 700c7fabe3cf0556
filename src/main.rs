//! The `ckflow` binary: a thin layer over the library (see `ckflow::cli`).

fn main() {
    std::process::exit(ckflow::cli::main());
}
