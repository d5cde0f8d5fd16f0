//! The `flatlan` binary. Its name is the CNI `type`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(flatlan_cni::run());
}
