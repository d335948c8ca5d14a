//! Many hosts, one set of grants: POP hosts publish the grants of their
//! logins to a Redis stream ([`publish`]), relays apply every entry to
//! their own gate ([`subscribe`]). The stream is the whole, replayable
//! state: each entry says what it grants or revokes and for how long from
//! its own ID ([`entry`]), and that ID, the broker's clock, is the only
//! time in it ([`broker_clock`]). Connections, their failures and their
//! credentials are [`link`]'s.

pub mod broker_clock;
mod coalesce;
pub mod entry;
pub mod link;
pub mod publish;
pub mod subscribe;
