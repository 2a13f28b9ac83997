//! Reading Dapr resource files: `Component` and `Subscription` YAMLs from
//! `--resources-path` and the `Configuration` YAML of `--config`, in Dapr's own format.
//!
//! Errors name the file, and for broken YAML the line, so a typo is found at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::pubsub::subscriptions::{Origin, Subscription, SubscriptionJson};

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A component as written in its file; metadata names are lower-cased because components
/// match them without regard to case.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub metadata: HashMap<String, String>,
    pub ignore_errors: bool,
    pub scopes: Vec<String>,
    pub file: PathBuf,
}

/// For the commands on a stopped stack's stores: every SQLite database the components name
/// must exist already. Opening a missing one would create it empty, and an empty store
/// reads as "nothing wrong".
pub fn require_existing_databases(specs: &[ComponentSpec]) -> anyhow::Result<()> {
    for spec in specs.iter().filter(|s| s.kind == "state.sqlite") {
        let Some(path) = spec.meta("connectionString") else {
            continue;
        };
        if path == ":memory:" || path.starts_with("file:") {
            continue;
        }
        anyhow::ensure!(
            Path::new(path).exists(),
            "no SQLite database at {path} (component {} in {}); run from the folder the \
             stack ran in, or fix connectionString",
            spec.name,
            spec.file.display()
        );
    }
    Ok(())
}

impl ComponentSpec {
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.metadata
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

#[derive(Deserialize, Default)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct RawResource {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Value,
    #[serde(default)]
    scopes: Vec<String>,
}

fn read(path: &Path) -> Result<String, ResourceError> {
    std::fs::read_to_string(path).map_err(|source| ResourceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The resources of one YAML file's text (`path` only names it in errors).
fn parse_docs(text: &str, path: &Path) -> Result<Vec<RawResource>, ResourceError> {
    serde_saphyr::from_multiple::<RawResource>(text).map_err(|e| ResourceError::Yaml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// YAML scalars of any type become strings, as Dapr's metadata does.
fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether a resource with `scopes` is for `app_id`: no scopes, or scopes naming it.
fn for_app(scopes: &[String], app_id: &str) -> bool {
    scopes.is_empty() || scopes.iter().any(|s| s == app_id)
}

/// The `*.yaml`/`*.yml` files of the given folders, in name order within each.
fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ResourceError> {
    let mut all = Vec::new();
    for dir in paths {
        let entries = std::fs::read_dir(dir).map_err(|source| ResourceError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        all.extend(files);
    }
    Ok(all)
}

/// Loads every `Component` in the `*.yaml`/`*.yml` files of the given folders. Other kinds
/// (Configuration, Resiliency, Subscription, ...) are skipped; components scoped to other
/// app ids are left out, as daprd does.
pub fn load_components(
    paths: &[PathBuf],
    app_id: &str,
) -> Result<Vec<ComponentSpec>, ResourceError> {
    let mut specs = Vec::new();
    for file in yaml_files(paths)? {
        specs.extend(components_in(&read(&file)?, &file, app_id)?);
    }
    Ok(specs)
}

/// Every `Subscription` resource of the folders that is for `app_id` (no `scopes`, or
/// scopes naming it), in file order.
pub fn load_subscriptions(
    paths: &[PathBuf],
    app_id: &str,
) -> Result<Vec<Subscription>, ResourceError> {
    let mut subs = Vec::new();
    for file in yaml_files(paths)? {
        for doc in parse_docs(&read(&file)?, &file)? {
            if doc.kind != "Subscription" || !for_app(&doc.scopes, app_id) {
                continue;
            }
            let json: SubscriptionJson =
                serde_json::from_value(doc.spec).map_err(|e| ResourceError::Invalid {
                    path: file.clone(),
                    message: format!("subscription {}: {e}", doc.metadata.name),
                })?;
            subs.extend(json.into_subscription(Origin::Declarative));
        }
    }
    Ok(subs)
}

/// The components for `app_id` in one file's text; `file` names it in errors. (Also the
/// entry point of the YAML fuzz target.)
pub fn components_in(
    text: &str,
    file: &Path,
    app_id: &str,
) -> Result<Vec<ComponentSpec>, ResourceError> {
    let mut specs = Vec::new();
    for doc in parse_docs(text, file)? {
        if doc.kind != "Component" {
            continue;
        }
        let mut spec = component_from(doc, file)?;
        if for_app(&spec.scopes, app_id) {
            expand_templates(&mut spec, app_id).map_err(|message| ResourceError::Invalid {
                path: file.to_path_buf(),
                message,
            })?;
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// Fills in the placeholders Dapr fills in metadata values: `{uuid}` (a new one each),
/// `{podName}` (`POD_NAME`; an error without it), `{namespace}` (`<namespace>.<app id>`)
/// and `{appID}` — e.g. a `consumerID` per replica.
fn expand_templates(spec: &mut ComponentSpec, app_id: &str) -> Result<(), String> {
    for (name, value) in &mut spec.metadata {
        if !value.contains('{') {
            continue;
        }
        while value.contains("{uuid}") {
            *value = value.replacen("{uuid}", &uuid::Uuid::new_v4().to_string(), 1);
        }
        if value.contains("{podName}") {
            let pod = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty());
            let Some(pod) = pod else {
                return Err(format!(
                    "component {}: metadata {name} refers to {{podName}} but POD_NAME is not set",
                    spec.name
                ));
            };
            *value = value.replace("{podName}", &pod);
        }
        let namespace = std::env::var("NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        *value = value
            .replace("{namespace}", &format!("{namespace}.{app_id}"))
            .replace("{appID}", app_id);
    }
    Ok(())
}

fn component_from(doc: RawResource, file: &Path) -> Result<ComponentSpec, ResourceError> {
    let invalid = |message: String| ResourceError::Invalid {
        path: file.to_path_buf(),
        message,
    };
    if doc.metadata.name.is_empty() {
        return Err(invalid("component has no metadata.name".into()));
    }
    let spec = doc
        .spec
        .as_object()
        .ok_or_else(|| invalid("component has no spec".into()))?;
    let kind = spec.get("type").map(scalar_string).unwrap_or_default();
    if kind.is_empty() {
        return Err(invalid(format!(
            "component {} has no spec.type",
            doc.metadata.name
        )));
    }
    let mut metadata = HashMap::new();
    if let Some(items) = spec.get("metadata").and_then(Value::as_array) {
        for item in items {
            let name = item.get("name").map(scalar_string).unwrap_or_default();
            if name.is_empty() {
                return Err(invalid(format!(
                    "component {}: a metadata item has no name",
                    doc.metadata.name
                )));
            }
            if item.get("secretKeyRef").is_some() {
                return Err(invalid(format!(
                    "component {}: metadata {name} uses secretKeyRef; secret stores are not supported by this sidecar",
                    doc.metadata.name
                )));
            }
            let value = item.get("value").map(scalar_string).unwrap_or_default();
            metadata.insert(name.to_ascii_lowercase(), value);
        }
    }
    Ok(ComponentSpec {
        name: doc.metadata.name,
        kind,
        version: spec.get("version").map(scalar_string).unwrap_or_default(),
        metadata,
        ignore_errors: spec
            .get("ignoreErrors")
            .is_some_and(|v| scalar_string(v) == "true"),
        scopes: doc.scopes,
        file: file.to_path_buf(),
    })
}

/// The parts of Dapr's `Configuration` this sidecar acts on.
#[derive(Debug, Clone)]
pub struct Configuration {
    /// `tracing.samplingRate`; 0 means no tracing work at all.
    pub sampling_rate: f64,
    pub zipkin_endpoint: Option<String>,
    pub metrics_enabled: bool,
    pub name_resolution: NameResolution,
    /// `mtls.enabled`: calls between sidecars over mTLS.
    pub mtls_enabled: bool,
}

impl Default for Configuration {
    fn default() -> Self {
        Configuration {
            sampling_rate: 0.0,
            zipkin_endpoint: None,
            metrics_enabled: true,
            name_resolution: NameResolution::default(),
            mtls_enabled: false,
        }
    }
}

/// `spec.nameResolution`: how this sidecar finds its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NameResolution {
    /// None given: the local registry folder, for sidecars on one machine (daprd's default
    /// is mDNS; this sidecar's is the folder, which needs no network).
    #[default]
    Registry,
    /// `component: mdns`: sidecars announce themselves on the LAN and browse for the others.
    Mdns,
    /// `component: kubernetes`: DNS names, `<app-id>-dapr.<namespace>.svc.<clusterDomain>`
    /// by default, or the `template` (`{{.ID}}`, `{{.Namespace}}`, `{{.Port}}`), on the
    /// caller's own internal port as in Kubernetes, where every sidecar uses the same one.
    Dns {
        cluster_domain: String,
        template: Option<String>,
    },
}

pub fn load_configuration(path: &Path) -> Result<Configuration, ResourceError> {
    configuration_in(&read(path)?, path)
}

/// The Configuration in one file's text; `path` names it in errors.
pub fn configuration_in(text: &str, path: &Path) -> Result<Configuration, ResourceError> {
    let invalid = |message: String| ResourceError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let docs = parse_docs(text, path)?;
    let doc = docs
        .into_iter()
        .find(|d| d.kind == "Configuration")
        .ok_or_else(|| invalid("no resource of kind Configuration".into()))?;
    let mut config = Configuration::default();
    if let Some(tracing) = doc.spec.get("tracing") {
        let rate = tracing
            .get("samplingRate")
            .map(scalar_string)
            .unwrap_or_default();
        config.sampling_rate = if rate.is_empty() {
            0.0001
        } else {
            rate.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    invalid(format!(
                        "tracing.samplingRate {rate:?} is not a number from 0 to 1"
                    ))
                })?
        };
        config.zipkin_endpoint = tracing
            .get("zipkin")
            .and_then(|z| z.get("endpointAddress"))
            .map(scalar_string)
            .filter(|s| !s.is_empty());
    }
    let switch = |section: &str| -> Result<Option<bool>, ResourceError> {
        let Some(enabled) = doc.spec.get(section).and_then(|m| m.get("enabled")) else {
            return Ok(None);
        };
        match scalar_string(enabled).as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            other => Err(invalid(format!(
                "{section}.enabled {other:?} is not true or false"
            ))),
        }
    };
    if let Some(on) = switch("metrics")? {
        config.metrics_enabled = on;
    }
    config.mtls_enabled = switch("mtls")?.unwrap_or(false);
    if let Some(nr) = doc.spec.get("nameResolution") {
        let setting = |key: &str| {
            nr.get("configuration")
                .and_then(|c| c.get(key))
                .map(scalar_string)
                .filter(|s| !s.is_empty())
        };
        config.name_resolution = match nr.get("component").map(scalar_string).as_deref() {
            None | Some("") => NameResolution::Registry,
            Some("mdns") => NameResolution::Mdns,
            Some("kubernetes") => NameResolution::Dns {
                cluster_domain: setting("clusterDomain").unwrap_or_else(|| "cluster.local".into()),
                template: setting("template"),
            },
            Some(other) => {
                return Err(invalid(format!(
                    "nameResolution.component {other:?} is not supported here (mdns or kubernetes; \
                     none for the local registry)"
                )));
            }
        };
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_resolution_as_the_configuration_names_it() {
        let of = |spec: &str| {
            configuration_in(
                &format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n{spec}"),
                Path::new("config.yaml"),
            )
            .map(|c| c.name_resolution)
        };
        assert_eq!(of("  tracing: {}\n").unwrap(), NameResolution::Registry);
        assert_eq!(
            of("  nameResolution:\n    component: mdns\n").unwrap(),
            NameResolution::Mdns
        );
        assert_eq!(
            of("  nameResolution:\n    component: kubernetes\n    configuration:\n      template: \"{{.ID}}-dapr\"\n").unwrap(),
            NameResolution::Dns {
                cluster_domain: "cluster.local".into(),
                template: Some("{{.ID}}-dapr".into()),
            }
        );
        let err = of("  nameResolution:\n    component: consul\n").unwrap_err();
        assert!(err.to_string().contains("consul"), "{err}");
        let mtls = |spec: &str| {
            configuration_in(
                &format!("kind: Configuration\nspec:\n{spec}"),
                Path::new("config.yaml"),
            )
            .map(|c| c.mtls_enabled)
        };
        assert!(mtls("  mtls:\n    enabled: true\n").unwrap());
        assert!(!mtls("  mtls:\n    enabled: false\n").unwrap());
        assert!(!mtls("  metrics:\n    enabled: true\n").unwrap());
        let err = mtls("  mtls:\n    enabled: yes please\n").unwrap_err();
        assert!(err.to_string().contains("mtls.enabled"), "{err}");
    }

    #[test]
    fn metadata_placeholders_are_filled_in_as_dapr_does() {
        let specs = components_in(
            "kind: Component\nmetadata:\n  name: p\nspec:\n  type: pubsub.redis\n  metadata:\n  - name: consumerID\n    value: \"{appID}-{uuid}\"\n  - name: other\n    value: \"{uuid}/{uuid}|{namespace}\"\n",
            Path::new("p.yaml"),
            "checkout",
        )
        .unwrap();
        let id = specs[0].meta("consumerID").unwrap();
        let uuid = id.strip_prefix("checkout-").unwrap();
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
        let other = specs[0].meta("other").unwrap();
        let (uuids, namespace) = other.split_once('|').unwrap();
        let (a, b) = uuids.split_once('/').unwrap();
        assert_ne!(a, b, "a new uuid for each placeholder");
        assert!(namespace.ends_with(".checkout"), "{other}");
    }

    #[test]
    fn broken_yaml_names_file_and_line() {
        let dir = std::env::temp_dir().join(format!("sidecar-res-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.yaml");
        std::fs::write(
            &file,
            "kind: Component\nmetadata:\n  name: x\nspec: [unclosed\n",
        )
        .unwrap();
        let err = load_components(std::slice::from_ref(&dir), "app")
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("bad.yaml"), "{err}");
        assert!(
            err.contains("line") || err.contains(":4:") || err.contains(" 4"),
            "{err}"
        );
    }
}
