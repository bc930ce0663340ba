//! `harness init`: makes a folder a project (see [`crate::project`]) with a starter set of
//! scenarios, an empty snapshots folder, the nginx configs to edit and, for a backend command,
//! a stack file that runs it. It writes only what is missing.

use crate::error::HarnessError;
use crate::project::MANIFEST;
use std::path::{Path, PathBuf};

/// Every file a new project gets, relative to its root, with its text.
pub fn files(backend_command: &[String], name: &str) -> Vec<(PathBuf, String)> {
    let mut files = vec![(PathBuf::from(MANIFEST), manifest())];
    files.push((
        "scenarios/scenario.schema.json".into(),
        crate::scenario::json_schema(),
    ));
    for (file, text) in crate::assets::STARTER_SCENARIOS {
        let text = text.replace(
            "#:schema ../scenario.schema.json",
            "#:schema scenario.schema.json",
        );
        files.push((Path::new("scenarios").join(file), text));
    }
    files.push(("snapshots/.gitkeep".into(), String::new()));
    for (file, text) in crate::assets::NGINX_CONFIGS {
        files.push((Path::new("nginx").join(file), text.to_string()));
    }
    if !backend_command.is_empty() {
        files.push(("stack.toml".into(), stack_file(backend_command, name)));
    }
    files
}

fn manifest() -> String {
    "# A harness project: `harness` run in this folder or below it finds its files here.\n\
     scenarios = \"scenarios\"   # scenario files (`harness new NAME` writes one)\n\
     snapshots = \"snapshots\"   # what each scenario showed, to compare runs with\n\
     configs = \"nginx\"         # nginx.conf (fixed), nginx.legacy.conf, nginx.stock.conf, nginx.hardened.conf\n"
        .into()
}

/// A stack file that runs `command` (with `{fd}` in it, the harness hands it a bound socket;
/// else it binds `{bind}` itself and logs `listening on http://HOST:PORT`).
fn stack_file(command: &[String], name: &str) -> String {
    let listen = if command.iter().any(|a| a.contains("{fd}")) {
        "fd"
    } else {
        "log"
    };
    let command = command
        .iter()
        .map(|a| toml::Value::String(a.clone()).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let name = toml::Value::String(name.into());
    format!(
        "# Your backend, run by the harness in place of the reference one:\n\
         #   harness run --stack stack.toml        (snapshots named {{scenario}}@NAME)\n\
         #   harness diagnose --stack stack.toml   (what it and your nginx config do together)\n\
         name = {name}\n\n\
         [backend]\n\
         # \"fd\": the harness binds a port and passes the socket as {{fd}}; \"log\": the backend\n\
         # binds {{bind}} (127.0.0.1:0) itself and logs `listening on http://HOST:PORT`.\n\
         listen = \"{listen}\"\n\
         command = [{command}]\n\
         cwd = \".\"\n\
         health = \"/healthz\"\n\n\
         # Without [backend.env] the backend gets the reference backend's variable names:\n\
         # [backend.env]\n\
         # TWILIO_ACCOUNT_SID = \"{{twilio_account_sid}}\"\n\
         # TWILIO_AUTH_TOKEN = \"{{twilio_auth_token}}\"\n\
         # TWILIO_API_BASE = \"{{twilio_api_base}}\"\n\
         # RECORDINGS_DIR = \"{{recordings_dir}}\"\n\
         # PUBLIC_URL = \"{{public_url}}\"\n"
    )
}

/// What [`write`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Written {
    /// The files it wrote.
    pub written: Vec<PathBuf>,
    /// The files that existed already, left as they were.
    pub kept: Vec<PathBuf>,
}

/// Writes each of `files` under `root` that does not exist yet; never overwrites one (so
/// `harness init -- COMMAND…` in a project adds its stack file, and a deleted starter file
/// comes back).
pub fn write(root: &Path, files: &[(PathBuf, String)]) -> Result<Written, HarnessError> {
    let mut done = Written::default();
    for (rel, text) in files {
        let path = root.join(rel);
        if path.exists() {
            done.kept.push(rel.clone());
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(HarnessError::io(format!("create {}", dir.display())))?;
        }
        std::fs::write(&path, text)
            .map_err(HarnessError::io(format!("write {}", path.display())))?;
        done.written.push(rel.clone());
    }
    Ok(done)
}
