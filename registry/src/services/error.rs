//! The one error every service returns. Each face turns it into its own
//! answer in exactly one place: an OCI error body (`crate::error`), a
//! management API error (`crate::api::error`), or a console page
//! (`crate::console`). A message says what is wrong in words every face can
//! show; where the person can do something about it, a [`Hint`] names what
//! and where, and each face says where in its own terms (an endpoint, a page).

/// What a rule refused, or what failed underneath it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller may not do this, or may not learn whether the object exists:
    /// the words are the same either way.
    #[error("{0}")]
    Denied(String),
    /// The object does not exist (said only to callers who may know).
    #[error("{}", .0.message)]
    NotFound(Problem),
    /// The name is taken, or the object is in a state that forbids the change.
    #[error("{}", .0.message)]
    Conflict(Problem),
    /// A name, value or document the rules cannot accept.
    #[error("{}", .0.message)]
    Invalid(Problem),
    /// The metadata database failed.
    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else that is the registry's fault, with detail for the log.
    #[error("{0}")]
    Internal(String),
}

/// What is wrong with one thing a request named.
#[derive(Debug)]
pub struct Problem {
    /// The kind of thing.
    pub what: Thing,
    /// What is wrong, in words every face shows as they are.
    pub message: String,
    /// What the person can do next, if anything.
    pub hint: Option<Hint>,
}

/// The kinds of things a request names, so that a face can pick its precise
/// code (an OCI `MANIFEST_INVALID` rather than `NAME_INVALID`, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thing {
    /// A tenant.
    Tenant,
    /// A namespace.
    Namespace,
    /// A repository.
    Repository,
    /// A manifest.
    Manifest,
    /// A tag.
    Tag,
    /// A user.
    User,
    /// A password.
    Password,
    /// A robot account.
    Robot,
    /// A role held by a member.
    Role,
    /// A cluster.
    Cluster,
    /// A preheat job.
    PreheatJob,
    /// Any other field of a request.
    Field,
}

/// What to do next, and where: "list tenants" at [`Place::Tenants`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The advice. It follows the message after "; ", or straight after it
    /// when it begins with punctuation (", or rotate its token").
    pub then: &'static str,
    /// Where it is done.
    pub at: Place,
}

/// Where a person does something, named without saying through which face.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The list of tenants.
    Tenants,
    /// Creating a namespace in a tenant.
    NewNamespace,
    /// A tenant's namespaces.
    Namespaces {
        /// The tenant.
        tenant: String,
    },
    /// A namespace's P2P acceleration switch.
    P2pSwitch {
        /// The namespace.
        namespace: String,
    },
    /// A tenant's members and their roles.
    Members {
        /// The tenant.
        tenant: String,
    },
    /// A tenant's robot accounts.
    Robots {
        /// The tenant.
        tenant: String,
    },
    /// Creating a robot account in a tenant.
    NewRobot {
        /// The tenant.
        tenant: String,
    },
    /// Rotating a robot's token.
    RotateRobot {
        /// The tenant.
        tenant: String,
        /// The robot's name in it.
        robot: String,
    },
    /// A tenant's clusters and their agents.
    Clusters {
        /// The tenant.
        tenant: String,
    },
    /// The list of users.
    Users,
    /// Creating a user.
    NewUser,
}

impl Hint {
    /// The advice joined to `message` with `place`, which a face renders:
    /// `" with GET /api/v1/tenants"`, `" on the Tenants page"`.
    pub fn join(&self, message: &str, place: &str) -> String {
        let glue = if self.then.starts_with([',', ':', ';']) { "" } else { "; " };
        format!("{message}{glue}{}{place}", self.then)
    }
}

/// Shorthand for service results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `what` does not exist.
    pub fn not_found(what: Thing, message: impl Into<String>) -> Error {
        Error::NotFound(Problem { what, message: message.into(), hint: None })
    }

    /// `what` is taken or in the way.
    pub fn conflict(what: Thing, message: impl Into<String>) -> Error {
        Error::Conflict(Problem { what, message: message.into(), hint: None })
    }

    /// `what` cannot be accepted.
    pub fn invalid(what: Thing, message: impl Into<String>) -> Error {
        Error::Invalid(Problem { what, message: message.into(), hint: None })
    }

    /// Adds what to do next.
    pub fn then(mut self, then: &'static str, at: Place) -> Error {
        if let Error::NotFound(p) | Error::Conflict(p) | Error::Invalid(p) = &mut self {
            p.hint = Some(Hint { then, at });
        }
        self
    }
}

/// Turns a unique-constraint violation into a [`Error::Conflict`] that says
/// what is taken; any other database error stays what it was.
pub trait OnDuplicate<T> {
    /// `conflict` is only built when the violation happened.
    fn on_duplicate(self, conflict: impl FnOnce() -> Error) -> Result<T>;
}

impl<T> OnDuplicate<T> for std::result::Result<T, sqlx::Error> {
    fn on_duplicate(self, conflict: impl FnOnce() -> Error) -> Result<T> {
        self.map_err(|e| if crate::metadata::is_unique_violation(&e) { conflict() } else { e.into() })
    }
}
