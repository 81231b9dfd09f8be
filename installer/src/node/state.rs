//! The record of what node-setup changed, kept on the node so that
//! uninstalling can put every file back exactly as it was.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{on_root, read_optional, write_file, Error};

/// Where the record lives, as on the node.
pub const STATE_FILE: &str = "/var/lib/damselfly/node-setup.json";

/// Every file written and directory created, first install first.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Files, with their content before the first install and after the last.
    pub files: Vec<FileRecord>,
    /// Directories created, outermost first.
    pub dirs: Vec<String>,
}

/// One file node-setup wrote.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileRecord {
    /// As on the node, e.g. `/etc/hosts`.
    pub path: String,
    /// Its content before node-setup first wrote it; `None` if it did not exist.
    pub original: Option<String>,
    /// What node-setup last wrote.
    pub written: String,
}

impl State {
    /// The record under `root`, or an empty one.
    pub fn load(root: &Path) -> Result<State, Error> {
        match read_optional(root, STATE_FILE)? {
            None => Ok(State::default()),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| Error::Invalid { path: STATE_FILE.into(), reason: e.to_string() }),
        }
    }

    /// Writes the record under `root` (its directory must exist).
    pub fn save(&self, root: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Usage(e.to_string()))?;
        write_file(&on_root(root, STATE_FILE), &text)
    }
}
