//! The `flatlan` binary. Its name is the CNI `type`.
#![forbid(unsafe_code)]

fn main() {
    // Runtimes pass no arguments; any argument is an operator command.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if args.is_empty() {
        flatlan_cni::run()
    } else {
        flatlan_cni::cli::main(&args)
    };
    std::process::exit(code);
}
