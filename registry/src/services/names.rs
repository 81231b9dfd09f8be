//! Names of what the registry creates: tenants, namespaces, clusters, robots
//! and users. A face parses them where a request brings them in; the
//! services take and trust the type.

use std::fmt;

use damselfly_core::RepositoryName;

use super::{Error, Place, Thing};

const MAX_LEN: usize = 64;

/// A name matching `[a-z0-9]+([._-][a-z0-9]+)*`, at most 64 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

fn follows_grammar(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|&c| alnum(c) || matches!(c, b'.' | b'_' | b'-'))
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        // Separators stand alone between runs of letters and digits.
        && b.windows(2).all(|w| alnum(w[0]) || alnum(w[1]))
}

impl Name {
    fn parse(thing: Thing, what: &str, s: &str) -> Result<Name, Error> {
        if s.len() > MAX_LEN || !follows_grammar(s) {
            return Err(Error::invalid(
                thing,
                format!(
                    "{what} {s:?} is invalid: use 1 to {MAX_LEN} lowercase letters and digits, separated by single \
                     '.', '_' or '-'"
                ),
            ));
        }
        Ok(Name(s.to_owned()))
    }

    /// A tenant's name.
    pub fn tenant(s: &str) -> Result<Name, Error> {
        Name::parse(Thing::Tenant, "tenant name", s)
    }

    /// A cluster's name within its tenant.
    pub fn cluster(s: &str) -> Result<Name, Error> {
        Name::parse(Thing::Cluster, "cluster name", s)
    }

    /// A robot's name within its tenant.
    pub fn robot(s: &str) -> Result<Name, Error> {
        Name::parse(Thing::Robot, "robot name", s)
    }

    /// A namespace's name, which is also the first component of its repositories' names.
    pub fn namespace(s: &str) -> Result<Name, Error> {
        let name = Name::parse(Thing::Namespace, "namespace name", s)?;
        // The grammar above is narrower than a repository path component; checking
        // both keeps that true if either changes.
        match s.parse::<RepositoryName>() {
            Ok(_) if !s.contains('/') => Ok(name),
            _ => Err(Error::invalid(
                Thing::Namespace,
                format!("namespace name {s:?} is not a valid repository path component"),
            )),
        }
    }

    /// A user's login name.
    pub fn user(s: &str) -> Result<Name, Error> {
        if s.starts_with("robot$") {
            return Err(Error::invalid(Thing::User, "usernames starting with robot$ are reserved for robot accounts")
                .then("create a robot", Place::NewRobot { tenant: "{tenant}".to_owned() }));
        }
        Name::parse(Thing::User, "username", s)
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in ["a", "acme", "team-1", "a.b_c-d", "0", &"x".repeat(64)] {
            assert!(Name::tenant(ok).is_ok(), "{ok}");
            assert!(Name::namespace(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", "A", "-a", "a-", "a--b", "a..b", "a/b", "a b", "ä", "a$b", &"x".repeat(65)] {
            assert!(Name::tenant(bad).is_err(), "{bad:?}");
            assert!(Name::namespace(bad).is_err(), "{bad:?}");
        }
        assert!(Name::user("robot$acme+ci").is_err());
    }
}
