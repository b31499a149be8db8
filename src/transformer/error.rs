//! Errors of the transformer runtime.

use thiserror::Error;

/// Why a plugin could not be accepted or loaded.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The bytes are not a WebAssembly component we can use (core module,
    /// truncated file, random bytes, ...).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component exports none of the transformer interfaces.
    #[error(
        "the component exports none of ferry:transformer/input, output or \
         execution-finished (version 0.1.x){0}"
    )]
    NoHooks(String),
    /// The component was built against an incompatible contract version.
    #[error("incompatible contract version: {0}")]
    IncompatibleVersion(String),
    /// The component imports something the host does not offer.
    #[error("the component imports `{0}`, which the host does not offer")]
    UnsupportedImport(String),
    /// Compiling, deserialising or type-checking the component failed.
    #[error("cannot compile or link the component: {0}")]
    Compile(String),
    /// Reading a precompiled artifact failed.
    #[error("plugin store: {0}")]
    Io(String),
    /// The runtime itself could not be set up.
    #[error("cannot set up the WebAssembly runtime: {0}")]
    Runtime(String),
}

/// Why a hook call failed. Each error affects only the call (and, after a
/// trap, the rest of that turn's instance), never the host or other turns.
#[derive(Debug, Error)]
pub enum HookError {
    /// The guest trapped (panic, unreachable, out-of-bounds access, ...).
    #[error("plugin trapped: {message}")]
    Trap {
        message: String,
        /// The wasm backtrace, if wasmtime captured one.
        backtrace: Option<String>,
    },
    /// The call ran over its wall-time limit.
    #[error("plugin exceeded its time limit of {0} ms")]
    Timeout(u64),
    /// The guest tried to grow its memory beyond the limit.
    #[error("plugin exceeded its memory limit of {0} bytes")]
    Memory(usize),
    /// The guest returned a value that breaks the contract.
    #[error("invalid plugin result: {0}")]
    Validation(String),
    /// The guest returned `err(message)`.
    #[error("plugin returned an error: {0}")]
    Plugin(String),
    /// The plugin does not export the hook that was called.
    #[error("plugin does not export the {0} hook")]
    NotExported(&'static str),
    /// Creating the turn's instance failed.
    #[error("cannot instantiate plugin: {0}")]
    Instantiate(String),
    /// An earlier call of this turn trapped or timed out; the instance is
    /// unusable for the rest of the turn.
    #[error("plugin instance is unusable after an earlier failure in this turn")]
    Poisoned,
}

impl HookError {
    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            HookError::Trap { .. } => "trap",
            HookError::Timeout(_) => "timeout",
            HookError::Memory(_) => "memory",
            HookError::Validation(_) => "validation",
            HookError::Plugin(_) => "plugin_error",
            HookError::NotExported(_) => "not_exported",
            HookError::Instantiate(_) => "instantiate",
            HookError::Poisoned => "poisoned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable_labels() {
        assert_eq!(HookError::Timeout(5).kind(), "timeout");
        assert_eq!(HookError::Plugin("x".into()).kind(), "plugin_error");
        assert_eq!(HookError::NotExported("input").kind(), "not_exported");
        let trap = HookError::Trap {
            message: "unreachable".into(),
            backtrace: None,
        };
        assert_eq!(trap.kind(), "trap");
        assert_eq!(trap.to_string(), "plugin trapped: unreachable");
    }
}
