//! Who holds each input partition: the directory the request API routes by
//! (README "Scoring at authorisation time", several instances). An
//! instance that takes a partition over appends its API's address to that
//! partition's changelog, once the partition's state is restored; the
//! other instances' mirrors copy it into their stores under
//! [`Family::Owners`], as they copy the keys read across partitions. The
//! directory then travels the way the state does, and is never ahead of
//! it: an address is announced only where the state is ready to serve.

use super::{Change, Checkpoint, Family, StateError, owner_key};

/// The longest address an owner record may carry; a longer (or unreadable)
/// one is quarantined.
const MAX_ADDRESS_BYTES: usize = 512;

/// Where a partition's state is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This instance holds it.
    Here,
    /// Another instance's API, at this URL.
    At(String),
    /// Not known, or moving: no instance has announced it since it moved.
    Unknown,
}

impl Checkpoint {
    /// Tells the other instances that `partitions` are now served at
    /// `address`: appended to each partition's changelog, acknowledged.
    /// Without a changelog there is no one to tell.
    pub fn announce_holder(&self, partitions: &[i32], address: &str) -> Result<(), StateError> {
        let Some(log) = self.changelog() else {
            return Ok(());
        };
        let changes: Vec<Change> = partitions
            .iter()
            .map(|&p| Change {
                family: Family::Owners,
                key: owner_key(p),
                value: Some(address.as_bytes().to_vec()),
            })
            .collect();
        let routed: Vec<(i32, &Change)> = partitions.iter().copied().zip(&changes).collect();
        log.append(&routed).map(|_| ())
    }

    /// Who serves `partition`, as far as this instance has read. An
    /// announcement of `own_address` for a partition not held here is an
    /// old one of this instance's: the partition is moving.
    pub fn holder(&self, partition: i32, own_address: &str) -> Result<Holder, StateError> {
        if self.holds(partition) {
            return Ok(Holder::Here);
        }
        let Some(value) = self.get(Family::Owners, &owner_key(partition))? else {
            return Ok(Holder::Unknown);
        };
        match String::from_utf8(value) {
            Ok(address) if address.len() <= MAX_ADDRESS_BYTES => match address == own_address {
                true => Ok(Holder::Unknown),
                false => Ok(Holder::At(address)),
            },
            _ => {
                super::quarantined(
                    Family::Owners,
                    Some(partition),
                    "an owner address is not UTF-8 or is too long",
                );
                Ok(Holder::Unknown)
            }
        }
    }
}
