//! Store: durable state. Today this holds the entitlement ledger interface and its in-memory
//! implementation used by `sociogate check`; the SQL stores of the gateway implement the same
//! interface.

pub mod ledger;
