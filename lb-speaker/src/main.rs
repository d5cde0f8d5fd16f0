//! `flatlan-speaker`: argument parsing and wiring only; the engine lives in
//! the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flatlan_speaker::status::{self, Status};
use flatlan_speaker::Config;

#[derive(Parser)]
#[command(version, about = "flatlan's L2 load-balancer speaker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Announce the VIPs listed in a config file, with heartbeats among peers.
    Static {
        /// The YAML config file.
        #[arg(long)]
        config: PathBuf,
        /// Only validate the config and exit.
        #[arg(long)]
        check: bool,
    },
    /// The DaemonSet's process (issue 13): the speaker announcing the
    /// LoadBalancer Services' addresses, the allocator (elected with a
    /// Lease: one acts at a time) and the node agent, in one process.
    Kubernetes {
        /// The speaker's YAML: the static file's fields without `vips` and
        /// `node` (timers, peers or multicast, interfaces, endpoints).
        #[arg(long)]
        config: PathBuf,
        /// This node's name (the DaemonSet passes spec.nodeName).
        #[arg(long)]
        node: String,
        /// This node's LAN address (status.hostIP), for multicast
        /// heartbeats.
        #[arg(long)]
        node_address: Option<std::net::IpAddr>,
        /// The speaker's namespace: the allocator's Lease and the
        /// heartbeat Secret live there.
        #[arg(long, default_value = "flatlan")]
        namespace: String,
        /// This pod's name: its identity in the Lease.
        #[arg(long)]
        identity: Option<String>,
        /// The Secret holding the heartbeat secret, created with a random
        /// one when absent; unused when the config names `secret` or
        /// `secretFile`.
        #[arg(long, default_value = "flatlan-heartbeat")]
        secret_name: String,
        /// Also serve LoadBalancer Services that name no loadBalancerClass.
        #[arg(long)]
        default_class: bool,
        /// The node-range file; `none` runs no node agent (a cluster whose
        /// pod network is not flatlan).
        #[arg(long, default_value = "/var/lib/flatlan/node-range.json")]
        range_file: PathBuf,
        /// Run no allocator here (another deployment allocates).
        #[arg(long)]
        no_allocator: bool,
        /// Only validate the config and exit.
        #[arg(long)]
        check: bool,
    },
    /// Keep this node's slice of the LAN (the Node's spec.podCIDRs) in the
    /// node-range file the flatlan CNI plugin reads.
    NodeAgent {
        /// This node's name (the DaemonSet passes spec.nodeName).
        #[arg(long)]
        node: String,
        #[arg(long, default_value = "/var/lib/flatlan/node-range.json")]
        range_file: PathBuf,
        /// Exit once the file holds the slice, retrying every second for
        /// at most this many seconds (the DaemonSet's init step, so the
        /// installer can write the conflist).
        #[arg(long, value_name = "TIMEOUT_SECONDS")]
        once: Option<u64>,
    },
    /// Print each VIP's owner, interface, MAC and last GARP.
    Status {
        /// The daemon's metrics/status endpoint.
        #[arg(long, default_value = "127.0.0.1:7472")]
        addr: SocketAddr,
        /// Read a status file instead of asking the daemon.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// List every LoadBalancer Service flatlan serves from the
        /// Kubernetes API (in-cluster config, KUBECONFIG or --kubeconfig),
        /// with its pool, joined with this node's speaker view (--addr).
        #[arg(long)]
        cluster: bool,
        /// The kubeconfig for --cluster.
        #[arg(long, requires = "cluster")]
        kubeconfig: Option<PathBuf>,
        /// With --cluster: flatlan also serves Services without a class.
        #[arg(long, requires = "cluster")]
        default_class: bool,
    },
    /// Measure failover, handoff, first GARP, ARP reply latency and RSS
    /// in network namespaces of its own (root): runs `flatlan-lab
    /// speaker-bench` on this binary (flatlan-lab must sit next to it).
    Bench {
        /// Crash and graceful-handoff trials, each.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Seconds of the poor-LAN run (5% heartbeat loss, a busy node)
        /// that counts false failovers; 0 skips the poor-LAN figures.
        #[arg(long, default_value_t = 600)]
        lossy_secs: u64,
        /// Print one JSON object instead of the Markdown table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLATLAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().cmd {
        Cmd::Static { config, check } => {
            // Validate everything before touching the system.
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("flatlan-speaker: invalid config {}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            if check {
                println!("config ok: {} VIPs", cfg.vips.len());
                return ExitCode::SUCCESS;
            }
            match flatlan_speaker::engine::run_static(cfg, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flatlan-speaker: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Kubernetes {
            config,
            node,
            node_address,
            namespace,
            identity,
            secret_name,
            default_class,
            range_file,
            no_allocator,
            check,
        } => {
            let k = Kube {
                node,
                node_address,
                identity: identity.unwrap_or_else(|| format!("flatlan-{}", std::process::id())),
                namespace,
                secret_name,
                default_class,
                range_file: (range_file != std::path::Path::new("none")).then_some(range_file),
                allocator: !no_allocator,
            };
            match kubernetes(&config, k, check) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flatlan-speaker kubernetes: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::NodeAgent {
            node,
            range_file,
            once,
        } => match node_agent(&node, &range_file, once) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flatlan-speaker node-agent: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Bench {
            trials,
            lossy_secs,
            json,
        } => bench(trials, lossy_secs, json),
        Cmd::Status {
            addr,
            cluster: true,
            kubeconfig,
            default_class,
            ..
        } => match cluster_status(addr, kubeconfig.as_deref(), default_class) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("flatlan-speaker status --cluster: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Status {
            addr, file, json, ..
        } => {
            let st = match file {
                Some(f) => Status::read(&f),
                None => status::fetch(addr),
            };
            match st {
                Ok(st) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
                    } else {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0);
                        print!("{}", st.render(now));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flatlan-speaker status: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Measures this very binary with `flatlan-lab speaker-bench`: the bench
/// and its namespace lab live in flatlan-lab, on netns-testkit, so that
/// none of it is compiled into the daemon. Replaces this process.
fn bench(trials: usize, lossy_secs: u64, json: bool) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flatlan-speaker bench: cannot find my own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lab = exe.with_file_name("flatlan-lab");
    let mut cmd = std::process::Command::new(&lab);
    cmd.arg("speaker-bench")
        .arg("--speaker")
        .arg(&exe)
        .arg("--trials")
        .arg(trials.to_string())
        .arg("--lossy-secs")
        .arg(lossy_secs.to_string());
    if json {
        cmd.arg("--json");
    }
    let e = cmd.exec();
    eprintln!(
        "flatlan-speaker bench: cannot run {}: {e} (the bench is `flatlan-lab speaker-bench`; \
         build it with `cargo build -p flatlan-lab`)",
        lab.display()
    );
    ExitCode::FAILURE
}

/// In-cluster config (or KUBECONFIG), its requests named
/// `flatlan-speaker/VERSION` (kube-rs sends no User-Agent): the API
/// server's request log and audit can tell them apart
/// (scripts/test-cluster counts them).
async fn kube_client() -> Result<kube::Client, kube::Error> {
    let mut c = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    c.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("flatlan-speaker/", env!("CARGO_PKG_VERSION"))),
    ));
    kube::Client::try_from(c)
}

/// What `kubernetes` runs with, besides the config file.
struct Kube {
    node: String,
    node_address: Option<std::net::IpAddr>,
    identity: String,
    namespace: String,
    secret_name: String,
    default_class: bool,
    range_file: Option<PathBuf>,
    allocator: bool,
}

/// Reads the heartbeat secret (creating it when absent) unless the file
/// names one, validates the config, then runs the engine on the cluster's
/// VIPs with the allocator and the node agent beside it.
fn kubernetes(
    path: &std::path::Path,
    k: Kube,
    check: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use flatlan_speaker::{controller, kube_source, node_agent};
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let names_secret = |t: &str| {
        serde_yaml::from_str::<serde_yaml::Value>(t)
            .is_ok_and(|v| v.get("secret").is_some() || v.get("secretFile").is_some())
    };
    let secret = if names_secret(&text) {
        None
    } else if check {
        // --check contacts no API server: a stand-in for the cluster's
        // Secret, so the rest of the file is what gets checked.
        Some("check-only-stand-in-for-the-cluster-secret".to_string())
    } else {
        // A runtime of its own, gone before capabilities are dropped
        // (which must happen while this is the only thread).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let s = rt.block_on(async {
            let client = kube_client().await?;
            let api = kube::Api::namespaced(client, &k.namespace);
            Ok::<_, Box<dyn std::error::Error>>(
                node_agent::secret::ensure(&api, &k.secret_name).await?,
            )
        })?;
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        Some(s)
    };
    let cfg = Config::from_yaml_kubernetes(
        &text,
        &k.node,
        k.node_address,
        secret,
        &flatlan_speaker::config::read_secret_file,
    )
    .map_err(|e| format!("invalid config {}: {e}", path.display()))?;
    if check {
        println!("config ok (kubernetes mode, node {})", cfg.node_name);
        return Ok(());
    }
    flatlan_speaker::engine::run_with_source(cfg, move |metrics| async move {
        let client = kube_client().await.map_err(|e| {
            flatlan_speaker::Error::sys("Kubernetes client", std::io::Error::other(e.to_string()))
        })?;
        if let Some(out) = k.range_file {
            let (c, node) = (client.clone(), k.node.clone());
            tokio::spawn(async move {
                node_agent::run(c, &node, &out, std::future::pending()).await;
            });
        }
        if k.allocator {
            let mut opts = controller::Options::new(&k.namespace, &k.identity);
            opts.default_class = k.default_class;
            opts.metrics = metrics;
            let c = client.clone();
            tokio::spawn(async move {
                // A rolling update sends SIGTERM: giving the Lease up then
                // lets the next pod allocate at its next poll (2 s) rather
                // than after the lease runs out. The engine hears the same
                // signal and hands its VIPs over meanwhile, which takes
                // longer than the one PUT this needs.
                let shutdown = async {
                    use tokio::signal::unix::{signal, SignalKind};
                    match signal(SignalKind::terminate()) {
                        Ok(mut term) => {
                            term.recv().await;
                        }
                        Err(e) => {
                            tracing::warn!("no SIGTERM handler for the allocator: {e}");
                            std::future::pending::<()>().await
                        }
                    }
                };
                // It runs until then; an error is a bad option, found at once.
                if let Err(e) = controller::run_until(c, opts, shutdown).await {
                    tracing::error!("the allocator stopped: {e}");
                }
            });
        }
        let opts = kube_source::Options {
            default_class: k.default_class,
            ..Default::default()
        };
        let source = kube_source::KubeSource::new(client, k.node, opts);
        Ok(Box::new(source) as Box<dyn flatlan_speaker::source::VipSource>)
    })?;
    Ok(())
}

/// In-cluster config (or KUBECONFIG), then watch the Node until SIGTERM
/// or Ctrl-C.
fn node_agent(
    node: &str,
    range_file: &std::path::Path,
    once: Option<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = kube_client().await?;
        if let Some(timeout) = once {
            let api = kube::Api::all(client);
            let secs = std::time::Duration::from_secs;
            flatlan_speaker::node_agent::until_synced(
                &api,
                node,
                range_file,
                secs(1),
                secs(timeout),
            )
            .await?;
            return Ok(());
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        flatlan_speaker::node_agent::run(client, node, range_file, stop).await;
        Ok(())
    })
}

/// `status --cluster`: the API's Services and pools joined with this
/// node's speaker view (absent if the speaker does not answer).
fn cluster_status(
    addr: SocketAddr,
    kubeconfig: Option<&std::path::Path>,
    default_class: bool,
) -> Result<String, Box<dyn std::error::Error>> {
    let local = match status::fetch(addr) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("flatlan-speaker status --cluster: no speaker view ({e})");
            None
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = match kubeconfig {
            Some(p) => {
                let kc = kube::config::Kubeconfig::read_from(p)?;
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                kube::Client::try_from(cfg)?
            }
            None => kube_client().await?,
        };
        let rows = status::cluster::gather(client, default_class, "metallb-system", local.as_ref())
            .await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(status::cluster::render(&rows, local.as_ref(), now))
    })
}
