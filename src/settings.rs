//! Configuration: built-in defaults, then an optional TOML file (`--config FILE` or
//! `LM_INGEST_CONFIG`), then `LM_INGEST__SECTION__KEY` environment variables.
//! `config/example.toml` documents every key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const CONFIG_FILE_ENV: &str = "LM_INGEST_CONFIG";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub parsers: ParsersSettings,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParsersSettings {
    /// A folder of `*.toml` rule files that add plugins or replace built-in ones of the same id.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration file {path}: {source}")]
    File {
        path: PathBuf,
        source: config::ConfigError,
    },
    #[error("configuration: {0}")]
    Invalid(config::ConfigError),
}

impl Settings {
    /// Loads from `file` (else `$LM_INGEST_CONFIG`, else no file) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let env_file = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        let mut builder = config::Config::builder();
        if let Some(path) = &file {
            let source = config::File::from(path.as_path()).format(config::FileFormat::Toml);
            builder = builder.add_source(source);
            // Read the file on its own first so its errors name it.
            config::Config::builder()
                .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml))
                .build()
                .map_err(|source| SettingsError::File {
                    path: path.clone(),
                    source,
                })?;
        }
        builder
            .add_source(
                config::Environment::with_prefix("LM_INGEST")
                    .prefix_separator("__")
                    .separator("__"),
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(SettingsError::Invalid)
    }
}
