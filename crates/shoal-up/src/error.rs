//! The errors of `shoal up`: a bad topology file, or a part that could not
//! start or stopped on its own. Each is one line naming the part, the key and
//! the cause.

use shoal_core::config::ConfigError;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The topology file is invalid (file:line: key: message).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A part could not start; whatever had started was stopped again.
    #[error("{part}: {key}: {cause} (nothing was left running)")]
    Start {
        /// `broker`, `stats`, `cluster.web`, `proxy`, `up`.
        part: String,
        /// The key of the part's table the failure is about.
        key: String,
        /// The cause.
        cause: String,
    },
    /// A part ended while the topology ran (the rest was stopped).
    #[error("{part} stopped on its own: {cause}; the topology was stopped")]
    Ended {
        /// The part.
        part: String,
        /// Why, as far as known.
        cause: String,
    },
}

impl UpError {
    /// A start failure of `part` about `key`.
    pub fn start(part: impl Into<String>, key: impl Into<String>, cause: impl ToString) -> Self {
        UpError::Start {
            part: part.into(),
            key: key.into(),
            cause: cause.to_string(),
        }
    }
}
