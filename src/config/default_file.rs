//! The commented default configuration file shipped in packages and printed by
//! `warbler config print-default`, and the tests that keep it in step with the schema.

/// `assets/warbler.default.toml`: every key, its documentation and its default, commented
/// out. Parsing it gives `Config::default()`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../assets/warbler.default.toml");

#[cfg(test)]
mod tests {
    use super::DEFAULT_CONFIG_TOML;
    use crate::config::Config;

    /// `section.key` for every key the schema serializes (options included, as `null`).
    fn schema_key_paths() -> Vec<String> {
        let value = serde_json::to_value(Config::default()).expect("config serializes");
        let mut paths = Vec::new();
        for (section, table) in value.as_object().expect("top level is a table") {
            let table = table.as_object().expect("every top-level key is a section");
            for key in table.keys() {
                paths.push(format!("{section}.{key}"));
            }
        }
        paths
    }

    /// `(section, key, line index)` of each `# key = value` line of the file.
    fn commented_keys(text: &str) -> Vec<(String, String, usize)> {
        let mut section = String::new();
        let mut found = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = "))
            {
                if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    found.push((section.clone(), key.to_owned(), i));
                }
            }
        }
        found
    }

    #[test]
    fn the_default_file_parses_to_the_default_config() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).expect("default file parses");
        assert_eq!(parsed, Config::default());
        assert!(parsed.validate().is_ok());
    }

    #[test]
    fn every_schema_key_has_a_documented_line_in_the_default_file() {
        let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().collect();
        let keys = commented_keys(DEFAULT_CONFIG_TOML);
        for path in schema_key_paths() {
            let (section, key) = path.split_once('.').expect("section.key");
            let Some((_, _, at)) = keys.iter().find(|(s, k, _)| s == section && k == key) else {
                panic!("assets/warbler.default.toml has no `# {key} = …` line under [{section}]");
            };
            let above = lines[at - 1];
            assert!(
                above.starts_with("# ") && !above.contains(" = "),
                "`{path}` in assets/warbler.default.toml needs a comment line above it"
            );
        }
    }

    #[test]
    fn uncommenting_every_key_gives_the_defaults_and_names_no_unknown_key() {
        // Each commented value is the default, except the `files`-mode examples.
        let uncommented: String = DEFAULT_CONFIG_TOML
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut parsed: Config =
            toml::from_str(&uncommented).expect("every commented key is a schema key");
        assert!(parsed.tls.cert.is_some() && parsed.tls.key.is_some());
        parsed.tls.cert = None;
        parsed.tls.key = None;
        assert_eq!(parsed, Config::default());
    }
}
