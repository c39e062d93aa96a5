//! Who is calling: the identity a validated token carries, and the policy
//! every API applies with it (roles `admin`, `member`, `reader`).

/// A validated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub user_id: String,
    pub user_name: String,
    /// The project the token is scoped to.
    pub project_id: String,
    pub project_name: String,
    /// Role names on that project.
    pub roles: Vec<String>,
    /// Unix seconds the token expires at.
    pub expires_unix: u64,
}

pub const ADMIN: &str = "admin";
pub const MEMBER: &str = "member";
pub const READER: &str = "reader";

impl Auth {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Cloud administrator: sees and changes every project's resources.
    pub fn is_admin(&self) -> bool {
        self.has_role(ADMIN)
    }

    /// May create, change and delete (admin or member); readers only read.
    pub fn can_write(&self) -> bool {
        self.is_admin() || self.has_role(MEMBER)
    }

    /// May see resources of `project_id` (others are reported as not found).
    pub fn can_see(&self, project_id: &str) -> bool {
        self.is_admin() || self.project_id == project_id
    }
}
