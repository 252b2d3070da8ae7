//! The command line: `calls-ctl [--url URL] [--token TOKEN] <command>`, commands named
//! as mmctl's (`config get`, `plugin add`, ...) where mmctl has them.

use std::io::BufRead;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use super::client::Client;
use super::credentials::{self, Credentials};
use super::{config_path, CtlError};

#[derive(Parser, Debug)]
#[command(
    name = "calls-ctl",
    version,
    about = "Administer calls-host and the Calls plugin from a script (as mmctl does a Mattermost server)",
    long_about = "Administer calls-host and the Calls plugin from a script, as mmctl does a \
        Mattermost server: over the API, as a system admin, with a session token.\n\n\
        Log in once with `calls-ctl auth login URL --username NAME` (the token is kept in \
        ~/.config/calls-ctl/credentials.json, readable by you only), or give --url and \
        --token (CALLS_CTL_URL, CALLS_CTL_TOKEN) with every command."
)]
pub struct Cli {
    /// The server, e.g. http://127.0.0.1:8065 (default: the one of `auth login`).
    #[arg(long, global = true, env = "CALLS_CTL_URL")]
    pub url: Option<String>,
    /// A session token of a system admin (default: the one of `auth login`).
    #[arg(long, global = true, env = "CALLS_CTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Log in to a server and keep the token, log out, or show who is logged in.
    #[command(subcommand)]
    Auth(AuthCmd),
    /// Read and change the server's configuration (the System Console's settings).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Install, enable, disable and list plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Enable or disable calls in a channel, or show its calls state.
    #[command(subcommand)]
    Channel(ChannelCmd),
}

#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Log in and keep the server's URL and the session token for the other commands.
    Login {
        /// The server, e.g. http://127.0.0.1:8065.
        url: String,
        /// Username or email.
        #[arg(long)]
        username: String,
        /// The password (default: CALLS_CTL_PASSWORD, else one line read from stdin).
        #[arg(long, env = "CALLS_CTL_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Forget the kept token (the session itself ends when it expires).
    Logout,
    /// Show the server and the user of the kept token.
    Current,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the whole configuration as JSON.
    Show,
    /// Print one setting as JSON, e.g. `ServiceSettings.SiteURL` or
    /// `PluginSettings.Plugins.com.mattermost.calls.RTCDServiceURL`.
    Get {
        /// `Section.Key`; keys match in any case.
        key: String,
    },
    /// Change one setting and save the configuration; a value the server (or the
    /// plugin) refuses is not saved, and its error is printed.
    Set {
        /// `Section.Key`; keys match in any case.
        key: String,
        /// The new value, typed as the old one (string, true/false, number); a new
        /// setting takes JSON; several values make a list.
        #[arg(required = true, num_args = 1..)]
        value: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PluginCmd {
    /// Install a plugin from its bundle (.tar.gz), replacing an installed version.
    #[command(visible_alias = "add")]
    Install {
        /// The bundle, e.g. dist/com.mattermost.calls-0.1.0.tar.gz.
        bundle: std::path::PathBuf,
        /// Enable it once installed.
        #[arg(long)]
        enable: bool,
    },
    /// Enable an installed plugin (the server starts it).
    Enable {
        /// Plugin id, e.g. com.mattermost.calls.
        id: String,
    },
    /// Disable a plugin (the server stops it; its settings are kept).
    Disable {
        /// Plugin id, e.g. com.mattermost.calls.
        id: String,
    },
    /// List the installed plugins, enabled and disabled.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ChannelCmd {
    /// Let everyone in the channel start calls (in test mode, only admins can
    /// otherwise).
    Enable(ChannelArg),
    /// Let nobody start calls in the channel.
    Disable(ChannelArg),
    /// Show whether calls are enabled in the channel, and its call if one is on.
    Show(ChannelArg),
}

#[derive(Args, Debug)]
pub struct ChannelArg {
    /// `team:channel` (names, e.g. demo:town-square) or the channel's id.
    pub channel: String,
}

/// Runs one command; what it prints goes to stdout.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    if let Command::Auth(a) = &cli.command {
        return auth(a).await;
    }
    let client = connect(cli.url, cli.token)?;
    match cli.command {
        Command::Auth(_) => Ok(()),
        Command::Config(c) => config(&client, c).await,
        Command::Plugin(p) => plugin(&client, p).await,
        Command::Channel(c) => channel(&client, c).await,
    }
}

fn connect(url: Option<String>, token: Option<String>) -> Result<Client, CtlError> {
    let kept = if url.is_none() || token.is_none() {
        credentials::load()?
    } else {
        None
    };
    let url = url.or_else(|| kept.as_ref().map(|c| c.url.clone()));
    let token = token.or_else(|| kept.as_ref().map(|c| c.token.clone()));
    match (url, token) {
        (Some(u), Some(t)) => Ok(Client::new(&u, &t)),
        _ => Err(CtlError::Usage(
            "not logged in: run `calls-ctl auth login URL --username NAME`, or give --url and --token".into(),
        )),
    }
}

async fn auth(cmd: &AuthCmd) -> Result<(), CtlError> {
    match cmd {
        AuthCmd::Login {
            url,
            username,
            password,
        } => {
            let password = match password {
                Some(p) => p.clone(),
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map_err(|e| CtlError::File {
                            path: "stdin".into(),
                            source: e,
                        })?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let (token, user) = Client::login(url, username, &password).await?;
            let name = user["username"].as_str().unwrap_or(username).to_string();
            let path = credentials::save(&Credentials {
                url: url.trim_end_matches('/').to_string(),
                token,
                username: name.clone(),
            })?;
            println!(
                "logged in to {url} as {name} (credentials in {})",
                path.display()
            );
            Ok(())
        }
        AuthCmd::Logout => {
            if credentials::remove()? {
                println!("logged out");
            } else {
                println!("not logged in");
            }
            Ok(())
        }
        AuthCmd::Current => match credentials::load()? {
            Some(c) => {
                println!("{} as {}", c.url, c.username);
                Ok(())
            }
            None => Err(CtlError::Usage("not logged in".into())),
        },
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

async fn config(client: &Client, cmd: ConfigCmd) -> Result<(), CtlError> {
    match cmd {
        ConfigCmd::Show => println!("{}", pretty(&client.config().await?)),
        ConfigCmd::Get { key } => {
            let cfg = client.config().await?;
            println!("{}", pretty(config_path::get(&cfg, &key)?));
        }
        ConfigCmd::Set { key, value } => {
            let mut cfg = client.config().await?;
            make_room_for_plugin_setting(client, &mut cfg, &key).await?;
            config_path::set(&mut cfg, &key, &value)?;
            let saved = client.put_config(&cfg).await?;
            // What the server kept (it may normalise), not what was sent.
            let now = config_path::get(&saved, &key)
                .cloned()
                .unwrap_or(Value::Null);
            println!("{key}: {}", serde_json::to_string(&now).unwrap_or_default());
        }
    }
    Ok(())
}

/// `PluginSettings.Plugins.<id>.<Key>` for an installed plugin nobody has configured
/// yet: its section is made (empty), so the key can go in it. Plugin ids have dots,
/// so which part is the id is learnt from the installed plugins.
async fn make_room_for_plugin_setting(
    client: &Client,
    cfg: &mut Value,
    key: &str,
) -> Result<(), CtlError> {
    const PREFIX: &str = "pluginsettings.plugins.";
    let Some(rest) = key
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .and_then(|_| key.get(PREFIX.len()..))
    else {
        return Ok(());
    };
    let listed = client.plugins().await?;
    let ids = ["active", "inactive"]
        .iter()
        .flat_map(|l| listed[*l].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m["id"].as_str().map(str::to_string));
    for id in ids {
        let is_it = rest
            .get(..id.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(&id))
            && rest.as_bytes().get(id.len()) == Some(&b'.');
        if !is_it {
            continue;
        }
        if let Some(plugins) = cfg
            .get_mut("PluginSettings")
            .and_then(|p| p.get_mut("Plugins"))
            .and_then(Value::as_object_mut)
        {
            if !plugins.keys().any(|k| k.eq_ignore_ascii_case(&id)) {
                plugins.insert(id, Value::Object(Default::default()));
            }
        }
        break;
    }
    Ok(())
}

async fn plugin(client: &Client, cmd: PluginCmd) -> Result<(), CtlError> {
    match cmd {
        PluginCmd::Install { bundle, enable } => {
            let bytes = std::fs::read(&bundle).map_err(|e| CtlError::File {
                path: bundle.display().to_string(),
                source: e,
            })?;
            let name = bundle
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "bundle.tar.gz".into());
            let m = client.upload_plugin(&name, bytes).await?;
            let id = m["id"].as_str().unwrap_or_default().to_string();
            println!(
                "installed {id} {}",
                m["version"].as_str().unwrap_or_default()
            );
            if enable {
                client.set_plugin_enabled(&id, true).await?;
                println!("enabled {id}");
            }
        }
        PluginCmd::Enable { id } => {
            client.set_plugin_enabled(&id, true).await?;
            println!("enabled {id}");
        }
        PluginCmd::Disable { id } => {
            client.set_plugin_enabled(&id, false).await?;
            println!("disabled {id}");
        }
        PluginCmd::List => {
            let p = client.plugins().await?;
            for (list, label) in [("active", "enabled"), ("inactive", "disabled")] {
                println!("{label}:");
                for m in p[list].as_array().into_iter().flatten() {
                    println!(
                        "  {} {} ({})",
                        m["id"].as_str().unwrap_or_default(),
                        m["version"].as_str().unwrap_or_default(),
                        m["name"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}

async fn channel(client: &Client, cmd: ChannelCmd) -> Result<(), CtlError> {
    let (arg, enable) = match &cmd {
        ChannelCmd::Enable(a) => (a, Some(true)),
        ChannelCmd::Disable(a) => (a, Some(false)),
        ChannelCmd::Show(a) => (a, None),
    };
    let ch = client.channel(&arg.channel).await?;
    let id = ch["id"].as_str().unwrap_or_default().to_string();
    let shown = ch["display_name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| ch["name"].as_str())
        .unwrap_or(&id)
        .to_string();
    match enable {
        Some(on) => {
            client.set_calls_enabled(&id, on).await?;
            let word = if on { "enabled" } else { "disabled" };
            println!("calls {word} in {shown} ({id})");
        }
        None => {
            let s = client.calls_channel(&id).await?;
            // What applies: the channel's own choice, else the server's default.
            let enabled = if s["enabled"].as_bool() == Some(true) {
                "enabled"
            } else {
                "disabled"
            };
            println!("{shown} ({id}): calls {enabled}");
            if let Some(call) = s.get("call").filter(|c| c.is_object()) {
                let n = call["sessions"].as_array().map_or(0, Vec::len);
                println!(
                    "  call {} since {}: {n} participant(s), host {}",
                    call["id"].as_str().unwrap_or_default(),
                    call["start_at"],
                    call["host_id"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
