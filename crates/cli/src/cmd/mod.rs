//! One module per command group.
pub mod audit;
pub mod clients;
pub mod env;
pub mod init;
pub mod jwk;
pub mod keys;
pub mod root_key;
pub mod serve;
pub mod token;
