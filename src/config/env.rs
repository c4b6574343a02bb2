//! The environment layer: `WARBLER_<SECTION>_<KEY>` variables for every configuration key,
//! found by walking the default configuration's serialized tree (so a new key is covered
//! without code here), parsed by the type of its default and laid over the file's table
//! before the schema deserializes it. Read once at process start and re-applied over every
//! reloaded file.
//!
//! Only names that start with `WARBLER_` and a section (`SERVER_`, `LIMITS_`, …) are
//! configuration; an unknown key there is an error naming the variable. The other
//! `WARBLER_` names belong to the command line (`WARBLER_CONFIG`, `WARBLER_DATA`,
//! `WARBLER_LISTEN`, `WARBLER_LOG`) or to the client commands, and are left alone.

use std::collections::BTreeMap;
use std::ffi::OsString;

use serde_json::Value as Json;

use super::Config;

/// Prefix of every Warbler environment variable.
pub const PREFIX: &str = "WARBLER_";

/// `WARBLER_` names that are not configuration keys: the command line's
/// (`serve --config/--data/--listen`, the log filter) and the client commands'.
pub const NOT_KEYS: [&str; 10] = [
    "WARBLER_CONFIG",
    "WARBLER_DATA",
    "WARBLER_LISTEN",
    "WARBLER_LOG",
    "WARBLER_URL",
    "WARBLER_CA",
    "WARBLER_ADMIN_TOKEN",
    "WARBLER_API_KEY",
    "WARBLER_CLIENT_KEY",
    "WARBLER_DEVICE_TOKEN",
];

/// A configuration value read from the environment is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}: {message}")]
pub struct EnvError {
    pub var: String,
    pub message: String,
}

/// How a variable's text becomes a TOML value: the kind of the key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Float,
    Bool,
    /// Strings, enums, addresses and paths (also keys whose default is unset).
    Text,
    /// A comma-separated list of strings.
    List,
}

/// One configuration key: its path in the file and the kind of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    path: Vec<String>,
    kind: Kind,
}

/// Every configuration key by its variable name, from the default configuration.
fn keys() -> BTreeMap<String, Key> {
    fn walk(prefix: &[String], value: &Json, out: &mut BTreeMap<String, Key>) {
        if let Json::Object(map) = value {
            // Nested tables below a section would be walked like sections.
            for (name, child) in map {
                let mut path = prefix.to_vec();
                path.push(name.clone());
                let kind = match child {
                    Json::Object(_) => {
                        walk(&path, child, out);
                        continue;
                    }
                    Json::Number(n) if n.is_f64() => Kind::Float,
                    Json::Number(_) => Kind::Integer,
                    Json::Bool(_) => Kind::Bool,
                    Json::Array(_) => Kind::List,
                    Json::String(_) | Json::Null => Kind::Text,
                };
                out.insert(var_name(&path), Key { path, kind });
            }
        }
    }
    let mut out = BTreeMap::new();
    // Config's Serialize cannot fail: plain structs, strings and numbers.
    if let Ok(tree) = serde_json::to_value(Config::default()) {
        walk(&[], &tree, &mut out);
    }
    out
}

/// `["limits", "pushes_per_second"]` → `WARBLER_LIMITS_PUSHES_PER_SECOND`.
fn var_name(path: &[String]) -> String {
    format!("{PREFIX}{}", path.join("_").to_ascii_uppercase())
}

/// The section names (`SERVER`, `LIMITS`, …) a configuration variable starts with.
fn sections() -> Vec<String> {
    let mut names: Vec<String> = keys()
        .values()
        .filter_map(|k| k.path.first().map(|s| s.to_ascii_uppercase()))
        .collect();
    names.dedup();
    names
}

fn parse(var: &str, kind: Kind, text: &str) -> Result<toml::Value, EnvError> {
    let bad = |what: &str| EnvError {
        var: var.to_owned(),
        message: format!("{text:?} is not {what}"),
    };
    let trimmed = text.trim();
    Ok(match kind {
        Kind::Integer => toml::Value::Integer(trimmed.parse().map_err(|_| bad("an integer"))?),
        Kind::Float => toml::Value::Float(trimmed.parse().map_err(|_| bad("a number"))?),
        Kind::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(bad("true or false")),
        },
        Kind::Text => toml::Value::String(text.to_owned()),
        Kind::List => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
    })
}

/// The error for `var`, under `section`'s prefix but naming no key: it lists the section's.
fn unknown_key(keys: &BTreeMap<String, Key>, section: &str, var: String) -> EnvError {
    let known: Vec<&str> = keys
        .keys()
        .filter(|k| k[PREFIX.len()..].starts_with(&format!("{section}_")))
        .map(String::as_str)
        .collect();
    EnvError {
        message: format!(
            "not a configuration key; the [{}] variables are {}",
            section.to_ascii_lowercase(),
            known.join(", ")
        ),
        var,
    }
}

/// One key set from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvSetting {
    /// The variable, e.g. `WARBLER_LIMITS_PUSHES_PER_SECOND`.
    pub var: String,
    /// The key it sets, e.g. `limits.pushes_per_second`.
    pub key: String,
    path: Vec<String>,
    value: toml::Value,
}

/// The configuration found in the environment, fixed at process start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvLayer {
    settings: Vec<EnvSetting>,
    /// `WARBLER_` names that are neither keys nor known non-key names (typos, likely).
    pub ignored: Vec<String>,
}

impl EnvLayer {
    /// Reads the process environment.
    ///
    /// # Errors
    /// The first variable that names an unknown key or holds a bad value.
    pub fn from_process_env() -> Result<Self, EnvError> {
        Self::from_vars(std::env::vars_os())
    }

    /// Builds the layer from `(name, value)` pairs (the process environment, or a test's).
    ///
    /// # Errors
    /// A variable under a section's prefix that names no key, a value that does not parse
    /// as its key's kind, or a value that is not UTF-8.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, EnvError> {
        let keys = keys();
        let sections = sections();
        let mut layer = Self::default();
        let mut named: Vec<(String, OsString)> = vars
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
            .filter(|(k, _)| k.starts_with(PREFIX))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for (var, value) in named {
            if let Some(key) = keys.get(&var) {
                let text = value.into_string().map_err(|_| EnvError {
                    var: var.clone(),
                    message: "the value is not UTF-8".into(),
                })?;
                layer.settings.push(EnvSetting {
                    key: key.path.join("."),
                    value: parse(&var, key.kind, &text)?,
                    path: key.path.clone(),
                    var,
                });
            } else if NOT_KEYS.contains(&var.as_str()) {
                // The command line's and the client commands' own variables: not keys.
            } else if let Some(section) = sections
                .iter()
                .find(|s| var[PREFIX.len()..].starts_with(&format!("{s}_")))
            {
                return Err(unknown_key(&keys, section, var));
            } else {
                layer.ignored.push(var);
            }
        }
        Ok(layer)
    }

    /// The keys this layer sets.
    #[must_use]
    pub fn settings(&self) -> &[EnvSetting] {
        &self.settings
    }

    /// The variable that sets `key` (`section.key`), if one does.
    #[must_use]
    pub fn var_for(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.var.as_str())
    }

    /// Lays every setting over `table` (a parsed file, or empty), replacing the file's value.
    pub fn apply(&self, table: &mut toml::Table) {
        for setting in &self.settings {
            let Some((last, parents)) = setting.path.split_last() else {
                continue;
            };
            let mut at = &mut *table;
            for name in parents {
                let entry = at
                    .entry(name.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if !entry.is_table() {
                    // The file's own type error is reported when it is parsed alone.
                    *entry = toml::Value::Table(toml::Table::new());
                }
                let toml::Value::Table(next) = entry else {
                    unreachable!("made a table above")
                };
                at = next;
            }
            at.insert(last.clone(), setting.value.clone());
        }
    }
}

/// Every configuration variable name, for documentation and tests.
#[must_use]
pub fn all_variables() -> Vec<String> {
    keys().into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(vars: &[(&str, &str)]) -> Result<EnvLayer, EnvError> {
        EnvLayer::from_vars(
            vars.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
    }

    fn config_with(file: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
        let env = layer(vars).map_err(|e| e.to_string())?;
        let mut table: toml::Table = toml::from_str(file).map_err(|e| e.to_string())?;
        env.apply(&mut table);
        Config::deserialize_merged(table, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_of_the_default_tree_maps_to_one_variable() {
        let tree = serde_json::to_value(Config::default()).expect("serializes");
        let mut count = 0;
        for (section, table) in tree.as_object().expect("table") {
            for key in table.as_object().expect("section").keys() {
                let var = format!("WARBLER_{section}_{key}").to_ascii_uppercase();
                assert!(
                    keys()
                        .get(&var)
                        .is_some_and(|k| k.path == [section.clone(), key.clone()]),
                    "{section}.{key} has no variable {var}"
                );
                count += 1;
            }
        }
        assert_eq!(keys().len(), count, "no two keys share a variable name");
        assert!(all_variables().contains(&"WARBLER_LIMITS_PUSHES_PER_SECOND".to_owned()));
        assert!(all_variables().contains(&"WARBLER_TLS_CERT".to_owned()));
    }

    #[test]
    fn numbers_lists_strings_and_enums_parse_by_the_key_kind() {
        let c = config_with(
            "",
            &[
                ("WARBLER_LIMITS_PUSHES_PER_SECOND", "500"),
                ("WARBLER_SERVER_HOSTNAMES", "a.example, b.example,"),
                ("WARBLER_LOG_LEVEL", "debug"),
                ("WARBLER_LOG_FORMAT", "json"),
                ("WARBLER_TLS_MODE", "files"),
                ("WARBLER_TLS_CERT", "/etc/c.pem"),
                ("WARBLER_SERVER_LISTEN", "0.0.0.0:9443"),
            ],
        )
        .expect("valid");
        assert_eq!(c.limits.pushes_per_second, 500);
        assert_eq!(c.server.hostnames, ["a.example", "b.example"]);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.log.format, super::super::LogFormat::Json);
        assert_eq!(c.tls.mode, super::super::TlsMode::Files);
        assert_eq!(
            c.tls.cert.as_deref(),
            Some(std::path::Path::new("/etc/c.pem"))
        );
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:9443");
        let empty = config_with("", &[("WARBLER_SERVER_HOSTNAMES", "")]).expect("valid");
        assert!(empty.server.hostnames.is_empty());
        assert_eq!(
            parse("X", Kind::Bool, "yes").expect("bool"),
            toml::Value::Boolean(true)
        );
        assert!(parse("X", Kind::Bool, "maybe").is_err());
        assert_eq!(
            parse("X", Kind::Float, "0.5").expect("float"),
            toml::Value::Float(0.5)
        );
    }

    #[test]
    fn the_environment_beats_the_file_and_leaves_other_keys_alone() {
        let c = config_with(
            "[limits]\npushes_per_second = 5\nmax_message_bytes = 100\n",
            &[("WARBLER_LIMITS_PUSHES_PER_SECOND", "500")],
        )
        .expect("valid");
        assert_eq!(c.limits.pushes_per_second, 500);
        assert_eq!(c.limits.max_message_bytes, 100);
    }

    #[test]
    fn bad_values_and_unknown_keys_name_the_variable() {
        let err = layer(&[("WARBLER_LIMITS_PUSHES_PER_SECOND", "fast")]).expect_err("bad");
        assert_eq!(err.var, "WARBLER_LIMITS_PUSHES_PER_SECOND");
        assert!(
            err.to_string().contains("\"fast\" is not an integer"),
            "{err}"
        );

        let err = layer(&[("WARBLER_LIMITS_PUSHES_PER_SECONDS", "5")]).expect_err("unknown");
        assert_eq!(err.var, "WARBLER_LIMITS_PUSHES_PER_SECONDS");
        assert!(
            err.message.contains("[limits] variables are")
                && err.message.ends_with("WARBLER_LIMITS_PUSHES_PER_SECOND"),
            "{err}"
        );

        let err = config_with("", &[("WARBLER_TLS_MODE", "sometimes")]).expect_err("enum");
        assert!(err.contains("WARBLER_TLS_MODE"), "{err}");
        let err = config_with("", &[("WARBLER_SERVER_LISTEN", "nowhere")]).expect_err("addr");
        assert!(err.contains("WARBLER_SERVER_LISTEN"), "{err}");
        let err = config_with("", &[("WARBLER_LIMITS_PUSHES_PER_SECOND", "-1")]).expect_err("neg");
        assert!(err.contains("WARBLER_LIMITS_PUSHES_PER_SECOND"), "{err}");
    }

    #[test]
    fn a_value_out_of_range_is_reported_with_its_variable() {
        let env = layer(&[("WARBLER_LIMITS_PUSHES_PER_SECOND", "0")]).expect("parses");
        let err = Config::load(None, &env).expect_err("0 is out of range");
        assert!(
            err.to_string()
                .contains("limits.pushes_per_second must be at least 1 (set by WARBLER_LIMITS_PUSHES_PER_SECOND)"),
            "{err}"
        );
    }

    #[test]
    fn the_configuration_guide_lists_every_variable() {
        let guide = include_str!("../../docs/configuration.md");
        for var in all_variables() {
            assert!(
                guide.contains(&format!("`{var}`")),
                "docs/configuration.md does not list `{var}`"
            );
        }
    }

    #[test]
    fn every_variable_a_command_reads_is_a_known_non_key_name() {
        let sources = [
            include_str!("../cli/app_cmd.rs"),
            include_str!("../cli/bench.rs"),
            include_str!("../cli/ca.rs"),
            include_str!("../cli/health.rs"),
            include_str!("../cli/key.rs"),
            include_str!("../cli/listen.rs"),
            include_str!("../cli/remote.rs"),
            include_str!("../cli/send.rs"),
            include_str!("../cli/serve.rs"),
        ];
        let mut seen = 0;
        for source in sources {
            for rest in source.split("env = \"").skip(1) {
                let name = rest.split('"').next().unwrap_or_default();
                assert!(NOT_KEYS.contains(&name), "{name} is missing from NOT_KEYS");
                assert!(
                    !all_variables().iter().any(|v| v == name),
                    "{name} is a key"
                );
                seen += 1;
            }
        }
        assert!(seen >= 10, "found only {seen} command-line variables");
    }

    #[test]
    fn command_line_and_client_names_are_not_keys_and_others_are_only_noted() {
        let env = layer(&[
            ("WARBLER_LOG", "debug"),
            ("WARBLER_DATA", "/srv/warbler"),
            ("WARBLER_LISTEN", "127.0.0.1:1"),
            ("WARBLER_API_KEY", "k"),
            ("WARBLER_LIMIT_PUSHES", "3"),
            ("OTHER_LIMITS_PUSHES_PER_SECOND", "3"),
        ])
        .expect("no error");
        assert!(env.settings().is_empty());
        assert_eq!(env.ignored, ["WARBLER_LIMIT_PUSHES"]);
    }
}
