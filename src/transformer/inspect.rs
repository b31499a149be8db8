//! Cheap validation of an uploaded plugin without compiling it: is it a
//! component, which hooks does it export, does it import only what the host
//! offers, and was it built against a compatible contract version?

use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};

use super::error::PluginError;
use super::types::{Hooks, PluginInfo};

/// The contract package and the versions the host accepts (0.1.x).
const CONTRACT_PACKAGE: &str = "ferry:transformer";
const CONTRACT_MAJOR_MINOR: (u64, u64) = (0, 1);
/// WASI 0.2.x packages the host links (granting nothing).
const WASI_PACKAGES: &[&str] = &[
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:io",
    "wasi:random",
    "wasi:sockets",
];
const WASI_HTTP_INTERFACES: &[&str] = &["wasi:http/types", "wasi:http/outgoing-handler"];
const WASI_MAJOR_MINOR: (u64, u64) = (0, 2);
/// Contract interfaces a plugin may import.
const CONTRACT_IMPORTS: &[&str] = &["types", "log", "session-storage"];

/// Hex SHA-256 of a component: its identity in the plugin store.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Validates a component without compiling it: a component (not a core module, not truncated), exporting at
/// least one hook of a compatible contract version, importing only what the host offers.
pub fn inspect(bytes: &[u8]) -> Result<PluginInfo, PluginError> {
    check_header(bytes)?;
    let names = top_level_names(bytes)?;
    for import in &names.imports {
        check_import(import)?;
    }
    let hooks = exported_hooks(&names.exports)?;
    Ok(PluginInfo {
        sha256: sha256_hex(bytes),
        hooks,
        imports: names.imports,
        size: bytes.len(),
    })
}

fn check_header(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not_a_component(
            "the file does not start with the WebAssembly magic bytes",
        ));
    }
    if Parser::is_core_wasm(bytes) {
        return Err(not_a_component(
            "this is a core WebAssembly module; build a component (for Rust: \
             target wasm32-wasip2, or wrap the module with `wasm-tools component new`)",
        ));
    }
    if !Parser::is_component(bytes) {
        return Err(not_a_component(
            "unsupported WebAssembly binary version or layer",
        ));
    }
    Ok(())
}

fn not_a_component(reason: &str) -> PluginError {
    PluginError::NotAComponent(reason.to_string())
}

#[derive(Default)]
struct Names {
    imports: Vec<String>,
    exports: Vec<String>,
}

/// The import and export names of the outermost component (nested modules
/// and components are skipped).
fn top_level_names(bytes: &[u8]) -> Result<Names, PluginError> {
    let mut names = Names::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| {
            PluginError::NotAComponent(format!("malformed or truncated component: {e}"))
        })?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import.map_err(malformed)?;
                    names.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = export.map_err(malformed)?;
                    names.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

fn malformed(error: wasmparser::BinaryReaderError) -> PluginError {
    PluginError::NotAComponent(format!("malformed component: {error}"))
}

/// An interface name `ns:pkg/iface@version`, split.
struct InterfaceName<'a> {
    package: &'a str,
    interface: &'a str,
    version: Option<(u64, u64)>,
}

impl<'a> InterfaceName<'a> {
    fn parse(name: &'a str) -> Option<Self> {
        let (path, version) = match name.split_once('@') {
            Some((path, version)) => (path, Some(major_minor(version)?)),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        package.contains(':').then_some(InterfaceName {
            package,
            interface,
            version,
        })
    }

    fn unversioned(&self) -> String {
        format!("{}/{}", self.package, self.interface)
    }
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_import(import: &str) -> Result<(), PluginError> {
    let unsupported = || PluginError::UnsupportedImport(import.to_string());
    let name = InterfaceName::parse(import).ok_or_else(unsupported)?;
    if name.package == CONTRACT_PACKAGE {
        require_version(import, name.version, CONTRACT_MAJOR_MINOR)?;
        return CONTRACT_IMPORTS
            .contains(&name.interface)
            .then_some(())
            .ok_or_else(unsupported);
    }
    let offered = WASI_PACKAGES.contains(&name.package)
        || WASI_HTTP_INTERFACES.contains(&name.unversioned().as_str());
    if !offered {
        return Err(unsupported());
    }
    if name.version.is_some_and(|v| v != WASI_MAJOR_MINOR) || name.version.is_none() {
        return Err(PluginError::IncompatibleVersion(format!(
            "`{import}`: the host offers WASI 0.2.x"
        )));
    }
    Ok(())
}

fn require_version(
    name: &str,
    version: Option<(u64, u64)>,
    wanted: (u64, u64),
) -> Result<(), PluginError> {
    if version == Some(wanted) {
        return Ok(());
    }
    Err(PluginError::IncompatibleVersion(format!(
        "`{name}`: the host implements {CONTRACT_PACKAGE}@{}.{}.x",
        wanted.0, wanted.1
    )))
}

fn exported_hooks(exports: &[String]) -> Result<Hooks, PluginError> {
    let mut hooks = Hooks::default();
    for export in exports {
        let Some(name) = InterfaceName::parse(export) else {
            continue;
        };
        if name.package != CONTRACT_PACKAGE {
            continue;
        }
        require_version(export, name.version, CONTRACT_MAJOR_MINOR)?;
        match name.interface {
            "input" => hooks.input = true,
            "output" => hooks.output = true,
            "execution-finished" => hooks.execution_finished = true,
            _ => {}
        }
    }
    if hooks.any() {
        return Ok(hooks);
    }
    let found = if exports.is_empty() {
        String::from("; it exports nothing")
    } else {
        format!("; its exports: {}", exports.join(", "))
    };
    Err(PluginError::NoHooks(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_wasm_core_modules_and_truncation() {
        let random = inspect(b"hello world, not wasm").unwrap_err();
        assert!(random.to_string().contains("magic bytes"), "{random}");
        let core = inspect(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(
            core.to_string().contains("core WebAssembly module"),
            "{core}"
        );
        let truncated = inspect(b"\0asm\x0d\0\x01\0\x01\x05").unwrap_err();
        assert!(truncated.to_string().contains("truncated"), "{truncated}");
        assert!(inspect(b"").is_err());
    }

    #[test]
    fn empty_component_has_no_hooks() {
        let error = inspect(b"\0asm\x0d\0\x01\0").unwrap_err();
        assert!(matches!(error, PluginError::NoHooks(_)), "{error}");
    }

    #[test]
    fn import_rules() {
        assert!(check_import("wasi:cli/stdout@0.2.6").is_ok());
        assert!(check_import("wasi:http/outgoing-handler@0.2.12").is_ok());
        assert!(check_import("ferry:transformer/log@0.1.3").is_ok());
        assert!(matches!(
            check_import("wasi:http/incoming-handler@0.2.0"),
            Err(PluginError::UnsupportedImport(_))
        ));
        assert!(matches!(
            check_import("ferry:transformer/log@0.2.0"),
            Err(PluginError::IncompatibleVersion(_))
        ));
        assert!(matches!(
            check_import("wasi:cli/stdout@0.3.0"),
            Err(PluginError::IncompatibleVersion(_))
        ));
        let evil = check_import("evil:x/y").unwrap_err();
        assert!(evil.to_string().contains("`evil:x/y`"), "{evil}");
        assert!(check_import("plain-function").is_err());
    }

    #[test]
    fn hooks_from_exports() {
        let exports = vec![
            "ferry:transformer/input@0.1.0".to_string(),
            "other:pkg/thing".to_string(),
        ];
        let hooks = exported_hooks(&exports).unwrap();
        assert!(hooks.input && !hooks.output && !hooks.execution_finished);
        let wrong = vec!["ferry:transformer/output@1.0.0".to_string()];
        assert!(matches!(
            exported_hooks(&wrong),
            Err(PluginError::IncompatibleVersion(_))
        ));
        let none = exported_hooks(&["x:y/z".to_string()]).unwrap_err();
        assert!(none.to_string().contains("x:y/z"));
    }
}
