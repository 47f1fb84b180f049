//! One module per command group.
pub mod audit;
pub mod backup;
pub mod clients;
pub mod docs;
pub mod env;
pub mod gateway;
pub mod init;
pub mod jwk;
pub mod keys;
pub mod root_key;
pub mod serve;
pub mod token;

/// An error the command has already printed in its own format; `main`
/// only sets the exit code.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported")
    }
}

impl std::error::Error for Reported {}
