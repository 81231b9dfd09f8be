//! `damselfly-agent`, the per-node daemon. The mirror, piece exchange and
//! cache arrive with the P2P work; until then the binary only identifies itself.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => println!("damselfly-agent {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "damselfly-agent {}: the P2P agent is not built yet; run damselfly-registry for the registry",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(2);
        }
    }
}
