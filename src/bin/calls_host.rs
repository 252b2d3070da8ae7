//! `calls-host`: a Mattermost-style host that installs and runs the Calls plugin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use calls_db::Db;
use calls_host::api::start_enabled_plugins;
use calls_host::config_store::ConfigStore;
use calls_host::grpc::HostGrpc;
use calls_host::store::HostStore;
use calls_host::{default_config, license_for, HostCtx};
use calls_wire::ids::new_id;
use calls_wire::proto::host_server::HostServer;
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "calls-host",
    version,
    about = "A Mattermost-style host for the Calls plugin"
)]
struct Args {
    /// Address of the HTTP API, websocket and web page.
    #[arg(long, default_value = "127.0.0.1:8065", env = "CALLS_HOST_LISTEN")]
    listen: SocketAddr,
    /// Directory for the config, the plugins and the SQLite database.
    #[arg(long, env = "CALLS_HOST_DATA_DIR")]
    data_dir: PathBuf,
    /// sqlite://PATH or postgres://... (default: SQLite file in the data dir).
    #[arg(long, env = "CALLS_HOST_DATABASE_URL")]
    database_url: Option<String>,
    /// Do not create the demo users, team and channels.
    #[arg(long)]
    no_demo: bool,
    /// License SKU reported to plugins: none, professional, enterprise.
    #[arg(long, default_value = "enterprise", env = "CALLS_HOST_LICENSE")]
    license: String,
    /// Install and enable this plugin bundle at start (.tar.gz).
    #[arg(long)]
    plugin_bundle: Option<PathBuf>,
    /// Public URL of this server (default: http://<listen>).
    #[arg(long)]
    site_url: Option<String>,
    /// Metrics server (as Mattermost's :8067): `/plugins/<id>/metrics` via the plugin's
    /// ServeMetrics hook. Off unless given.
    #[arg(long, env = "CALLS_HOST_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The most an uploaded plugin bundle may unpack to, in MiB (a larger one is refused).
    #[arg(
        long,
        default_value_t = 1024,
        env = "CALLS_HOST_MAX_BUNDLE_UNPACKED_MB"
    )]
    max_bundle_unpacked_mb: u64,
    /// Join the cluster of this name: the nodes started with the same name and
    /// database (PostgreSQL) share configuration, plugins and websocket events, and
    /// host calls together. This node's id is kept in its data dir.
    #[arg(long, env = "CALLS_HOST_CLUSTER")]
    cluster: Option<String>,
    /// Logins a second per source address (burst twice that), as Mattermost's login
    /// limiter; 0 turns it off (load tests log in hundreds of users from one address).
    #[arg(long, default_value_t = 5.0, env = "CALLS_HOST_LOGIN_RATE_LIMIT")]
    login_rate_limit: f64,
    /// Where uploaded files (call recordings) are kept (default: the data dir's
    /// `files/`). Every node of a cluster must see the same directory.
    #[arg(long, env = "CALLS_HOST_FILES_DIR")]
    files_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    calls_service::logging::init();
    calls_host::logins::return_large_blocks_to_the_system();
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calls-host: cannot start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calls-host: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if ![
        "none",
        "starter",
        "professional",
        "enterprise",
        "advanced",
        "entry",
    ]
    .contains(&args.license.as_str())
    {
        return Err(format!(
            "invalid --license {:?}: none, professional or enterprise",
            args.license
        )
        .into());
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    // The config (secrets), the database and the plugins are the host's alone.
    calls_host::make_private(&data_dir, 0o700)?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("calls.db").display()));
    let db = Db::connect(&database_url, 10).await?;
    if let Some(file) = database_url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or(rest))
    {
        calls_host::make_private(std::path::Path::new(file), 0o600)?;
    }
    let store = HostStore { db };
    store.migrate().await?;
    // Bound first: with port 0 the default site URL (which websocket origins are
    // checked against) names the port the kernel chose.
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let local = listener.local_addr()?;
    let site_url = args
        .site_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let cluster = match &args.cluster {
        Some(name) => {
            let node_id = read_or_create_id(&data_dir.join("node_id"))?;
            let c = calls_host::cluster::Cluster::new(&store.db, name, &node_id)?;
            tracing::info!(cluster = name, node_id, "joining the cluster");
            Some(c)
        }
        None => None,
    };
    let file_store = ConfigStore::File(data_dir.join("config.json"));
    let config_store = match &cluster {
        // Checked by `Cluster::new`: a cluster is on PostgreSQL.
        Some(_) => ConfigStore::database(&store.db).ok_or("cluster needs PostgreSQL")?,
        None => file_store,
    };
    let stored = config_store.load().await?;
    let seeded = stored.is_none();
    let config = match stored {
        Some(c) => c,
        // The first node of a cluster brings the config of its data dir, if any.
        None => match ConfigStore::File(data_dir.join("config.json"))
            .load()
            .await?
        {
            Some(c) => c,
            None => default_config(&site_url),
        },
    };
    let diagnostic_id = match &cluster {
        Some(c) => c.system_value("DiagnosticId", &new_id()).await?,
        None => read_or_create_id(&data_dir.join("diagnostic_id"))?,
    };
    let host = Arc::new(HostCtx {
        store,
        database_url,
        data_dir: data_dir.clone(),
        config: parking_lot::RwLock::new(config),
        config_store,
        cluster: cluster.clone(),
        license: license_for(&args.license),
        hub: calls_host::hub::Hub::named(cluster.as_ref().map_or("", |c| c.node_id.as_str())),
        plugins: Default::default(),
        plugin_state: Default::default(),
        grpc_addr: Default::default(),
        site_url,
        diagnostic_id,
        bundle_limits: calls_host::plugins::BundleLimits {
            max_bytes: args.max_bundle_unpacked_mb << 20,
            ..Default::default()
        },
        repeats: Default::default(),
        logins: calls_host::logins::Logins::new(args.login_rate_limit),
        files: Box::new(calls_host::files::LocalFiles::new(
            args.files_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("files")),
        )),
        uploading: Default::default(),
    });
    if host.cluster.is_none() {
        let initial = host.config.read().clone();
        host.save_config(initial).await?;
    } else if seeded {
        // Nodes starting together on an empty database: the first one's config wins,
        // the others take it.
        let initial = host.config.read().clone();
        if let Some(c) = host
            .config_store
            .update(|cur| cur.is_none().then_some(initial))
            .await?
        {
            *host.config.write() = c;
        }
    }
    if let Some(c) = &cluster {
        // Listening before any plugin starts: nothing sent to this node from then on
        // is missed.
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        c.start(host.site_url.clone(), tx).await;
        tokio::spawn(calls_host::sync::run(host.clone(), rx));
    }

    // The Host API for plugins, on loopback only.
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    *host.grpc_addr.write() = format!("http://{}", grpc_listener.local_addr()?);
    let grpc = tonic::transport::Server::builder()
        .add_service(HostServer::new(HostGrpc(host.clone())).max_decoding_message_size(64 << 20))
        .serve_with_incoming(
            // Nagle off, as on every signaling connection (see `calls_service::nodelay`).
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
        );
    tokio::spawn(async move {
        if let Err(e) = grpc.await {
            tracing::error!(error = %e, "host gRPC server failed");
        }
    });

    if !args.no_demo && calls_host::demo::seed(&host).await? {
        println!("demo users (username / password): admin / admin-password (system admin), alice / alice-password, bob / bob-password");
        println!("demo team: Town Square (calls in test mode: only admins start calls) and Calls (calls enabled for everyone)");
    }
    // A node joining a cluster runs the plugins the cluster has.
    calls_host::sync::sync_bundles(&host).await;
    if let Some(bundle) = &args.plugin_bundle {
        let bytes = std::fs::read(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
        let dir = host.plugins_dir();
        std::fs::create_dir_all(&dir)?;
        let m = calls_host::plugins::install_bundle(&dir, &bytes, host.bundle_limits)?;
        if let Some(c) = &host.cluster {
            let stored = c.bundle(&m.id).await?.map(|(v, _)| v);
            if stored.as_deref() != Some(m.version.as_str()) {
                c.put_bundle(&m.id, &m.version, &bytes).await?;
                c.send(
                    "",
                    calls_host::cluster::Message::BundleChanged {
                        plugin_id: m.id.clone(),
                    },
                )
                .await;
            }
        }
        if !host.plugin_enabled_in_config(&m.id) {
            host.update_config(|cfg| {
                cfg["PluginSettings"]["PluginStates"][&m.id] = json!({"Enable": true});
            })
            .await?;
        }
        tracing::info!(
            plugin_id = m.id,
            version = m.version,
            "installed bundle {}",
            bundle.display()
        );
    }
    start_enabled_plugins(&host).await;
    calls_host::demo::enable_calls_channel_when_ready(host.clone());

    if let Some(addr) = args.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr).await?;
        println!("calls-host metrics on http://{}", l.local_addr()?);
        let router = calls_host::api::metrics_router(host.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(calls_service::nodelay::listener(l), router).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    // Tests and scripts read this line to learn the port when --listen used port 0.
    println!("calls-host listening on http://{local}");
    let app = calls_host::api::router(host.clone());
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
    };
    axum::serve(
        calls_service::nodelay::listener(listener),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    let ids: Vec<String> = host.plugins.lock().await.keys().cloned().collect();
    for id in ids {
        calls_host::api::stop_plugin(&host, &id).await;
    }
    if let Some(c) = &host.cluster {
        c.leave().await;
    }
    Ok(())
}

/// An id kept in a file of the data dir (the diagnostic id, the node id): read, or
/// made and written the first time.
fn read_or_create_id(path: &std::path::Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = new_id();
            calls_host::write_private(path, id.as_bytes())?;
            Ok(id)
        }
    }
}
