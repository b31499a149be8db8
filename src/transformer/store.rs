//! The plugin store: uploaded components and their precompiled artifacts, content-addressed under the data
//! directory, and which version each endpoint runs.
//!
//! ```text
//! <data_dir>/plugins/blobs/<sha256>.wasm                 the component as uploaded
//! <data_dir>/plugins/artifacts/<sha256>-<engine>.cwasm   native code for this engine (rebuilt after upgrades)
//! <data_dir>/plugins/endpoints/<endpoint id>.json        active version and history
//! ```
//! Every file is written to a temporary name, synced and renamed, so a crash leaves either the old or the new
//! state, never half a file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::PluginError;
use super::inspect::inspect;
use super::runtime::{Plugin, Runtime};
use super::types::{Hooks, PluginInfo};

/// Versions remembered per endpoint (for `GET` and rollback).
const MAX_HISTORY: usize = 20;

/// One stored version, as shown by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub sha256: String,
    pub hooks: Vec<String>,
    pub imports: Vec<String>,
    pub size: usize,
    pub uploaded_at_ms: u64,
    /// `upload` or `config`.
    pub source: String,
}

/// What an endpoint runs: the active version (if any) and the versions before it, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub active: Option<Version>,
    pub history: Vec<Version>,
    /// sha256 of the plugin file named in the config at the last start: a changed file wins over uploads.
    #[serde(default)]
    pub config_sha256: Option<String>,
}

pub struct PluginStore {
    root: PathBuf,
    runtime: Arc<Runtime>,
}

impl PluginStore {
    /// Opens (creating) the store; fails with the path when the directory is unusable.
    pub fn open(data_dir: &Path, runtime: Arc<Runtime>) -> Result<PluginStore, PluginError> {
        let root = data_dir.join("plugins");
        for dir in ["blobs", "artifacts", "endpoints"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|e| io_error(&path, e))?;
        }
        Ok(PluginStore { root, runtime })
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Validates, stores and precompiles a component, and links it. Blocking (compiling takes seconds for
    /// Python or JavaScript): call it from a blocking thread.
    pub fn install(
        &self,
        wasm: &[u8],
        source: &str,
    ) -> Result<(Version, Arc<Plugin>), PluginError> {
        let info = inspect(wasm)?;
        let blob = self.blob_path(&info.sha256);
        if !blob.exists() {
            write_atomically(&blob, wasm)?;
        }
        let artifact = self.artifact_path(&info.sha256);
        if !artifact.exists() {
            let compiled = self.runtime.precompile(wasm)?;
            write_atomically(&artifact, &compiled)?;
        }
        let plugin = self
            .runtime
            .load_precompiled(&short(&info.sha256), info, &artifact)?;
        let version = version_of(&plugin.info, source);
        Ok((version, Arc::new(plugin)))
    }

    /// Loads a stored version: from its artifact, or recompiled from the blob when the artifact is missing
    /// or was built by another engine.
    pub fn load(&self, sha256: &str) -> Result<Arc<Plugin>, PluginError> {
        if !is_sha256(sha256) {
            return Err(PluginError::Io(format!("`{sha256}` is not a plugin hash")));
        }
        let blob = self.blob_path(sha256);
        let wasm = fs::read(&blob).map_err(|e| io_error(&blob, e))?;
        let info = inspect(&wasm)?;
        let artifact = self.artifact_path(sha256);
        if !artifact.exists() {
            let compiled = self.runtime.precompile(&wasm)?;
            write_atomically(&artifact, &compiled)?;
        }
        Ok(Arc::new(self.runtime.load_precompiled(
            &short(sha256),
            info,
            &artifact,
        )?))
    }

    pub fn state(&self, endpoint: &str) -> Result<EndpointState, PluginError> {
        let path = self.state_path(endpoint);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| PluginError::Io(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EndpointState::default()),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    pub fn save_state(&self, endpoint: &str, state: &EndpointState) -> Result<(), PluginError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| PluginError::Io(e.to_string()))?;
        write_atomically(&self.state_path(endpoint), &bytes)
    }

    /// Records `version` as the endpoint's active one; the previous active version goes to the history.
    pub fn activate(&self, endpoint: &str, version: Version) -> Result<EndpointState, PluginError> {
        let mut state = self.state(endpoint)?;
        if let Some(previous) = state.active.take() {
            if previous.sha256 != version.sha256 {
                state.history.insert(0, previous);
            }
        }
        state.history.retain(|v| v.sha256 != version.sha256);
        state.history.truncate(MAX_HISTORY);
        state.active = Some(version);
        self.save_state(endpoint, &state)?;
        Ok(state)
    }

    /// Makes the most recent earlier version active again; the current one is forgotten.
    pub fn rollback(&self, endpoint: &str) -> Result<(EndpointState, Arc<Plugin>), PluginError> {
        let mut state = self.state(endpoint)?;
        if state.history.is_empty() {
            return Err(PluginError::Io(
                "there is no earlier version to roll back to".into(),
            ));
        }
        let previous = state.history.remove(0);
        let plugin = self.load(&previous.sha256)?;
        state.active = Some(previous);
        self.save_state(endpoint, &state)?;
        Ok((state, plugin))
    }

    /// No plugin runs for the endpoint; the active version goes to the history (rollback restores it).
    pub fn deactivate(&self, endpoint: &str) -> Result<EndpointState, PluginError> {
        let mut state = self.state(endpoint)?;
        if let Some(active) = state.active.take() {
            state.history.insert(0, active);
            state.history.truncate(MAX_HISTORY);
        }
        self.save_state(endpoint, &state)?;
        Ok(state)
    }

    /// At start: the plugin an endpoint should run, given the plugin file named in the config (if any).
    /// A config file that changed since the last start is installed and activated; otherwise the stored
    /// active version (perhaps uploaded) is loaded from its artifact, without recompiling.
    pub fn restore(
        &self,
        endpoint: &str,
        config_plugin: Option<&Path>,
    ) -> Result<Option<Arc<Plugin>>, PluginError> {
        let mut state = self.state(endpoint)?;
        if let Some(path) = config_plugin {
            let wasm = fs::read(path).map_err(|e| io_error(path, e))?;
            let sha = super::inspect::sha256_hex(&wasm);
            if state.config_sha256.as_deref() != Some(sha.as_str()) {
                let (version, plugin) = self.install(&wasm, "config")?;
                state = self.activate(endpoint, version)?;
                state.config_sha256 = Some(sha);
                self.save_state(endpoint, &state)?;
                return Ok(Some(plugin));
            }
        }
        match &state.active {
            Some(active) => self.load(&active.sha256).map(Some),
            None => Ok(None),
        }
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{sha256}.wasm"))
    }

    fn artifact_path(&self, sha256: &str) -> PathBuf {
        let engine = self.runtime.compatibility_key();
        self.root
            .join("artifacts")
            .join(format!("{sha256}-{engine}.cwasm"))
    }

    fn state_path(&self, endpoint: &str) -> PathBuf {
        // Endpoint ids are validated by the config ([A-Za-z0-9_-]+), so they are safe file names.
        self.root.join("endpoints").join(format!("{endpoint}.json"))
    }
}

pub fn version_of(info: &PluginInfo, source: &str) -> Version {
    Version {
        sha256: info.sha256.clone(),
        hooks: hook_names(info.hooks),
        imports: info.imports.clone(),
        size: info.size,
        uploaded_at_ms: now_ms(),
        source: source.to_string(),
    }
}

pub fn hook_names(hooks: Hooks) -> Vec<String> {
    [
        (hooks.input, "input"),
        (hooks.output, "output"),
        (hooks.execution_finished, "execution-finished"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// The first 12 hex characters: how logs name a plugin version.
pub fn short(sha256: &str) -> String {
    sha256.chars().take(12).collect()
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn io_error(path: &Path, e: std::io::Error) -> PluginError {
    PluginError::Io(format!("{}: {e}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // The rename is durable only once the directory is synced.
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(path, e)
    })
}
