//! A key's window history as time tiles: per tile (a fixed span of event
//! time), the events, the non-null values, their sum, min and max. Adding
//! an event touches one tile and a window query sums the tiles it covers,
//! so both cost the same however long the history is; tiles older than the
//! longest window are dropped.

/// Bytes of one encoded tile: bucket, events, values, sum, min, max.
const TILE_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 8;
const FORMAT: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Tile {
    /// Event time divided by the tile span (floor).
    bucket: i64,
    /// Its events; stored with 32-bit counts.
    totals: Summary,
}

/// The tiles of one key, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tiles {
    tiles: Vec<Tile>,
}

/// Events and values over a span of tiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub events: u64,
    pub values: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            events: 0,
            values: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Summary {
    /// Adds one event (and its value, unless null).
    pub fn add(&mut self, value: Option<f64>) {
        self.events += 1;
        if let Some(v) = value {
            self.values += 1;
            self.sum += v;
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    /// Adds the events of another span.
    pub(super) fn merge(&mut self, other: &Summary) {
        self.events += other.events;
        self.values += other.values;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

impl Tiles {
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some((&format, body)) = bytes.split_first() else {
            return Err("empty value".into());
        };
        if format != FORMAT {
            return Err(format!("tile format {format}, this build reads {FORMAT}"));
        }
        if body.len() % TILE_BYTES != 0 {
            return Err(format!(
                "{} bytes is not a whole number of tiles",
                body.len()
            ));
        }
        let tiles = body
            .chunks_exact(TILE_BYTES)
            .map(|c| {
                let i64_at =
                    |at: usize| i64::from_le_bytes(c[at..at + 8].try_into().unwrap_or_default());
                let u32_at =
                    |at: usize| u32::from_le_bytes(c[at..at + 4].try_into().unwrap_or_default());
                let f64_at =
                    |at: usize| f64::from_le_bytes(c[at..at + 8].try_into().unwrap_or_default());
                Tile {
                    bucket: i64_at(0),
                    totals: Summary {
                        events: u64::from(u32_at(8)),
                        values: u64::from(u32_at(12)),
                        sum: f64_at(16),
                        min: f64_at(24),
                        max: f64_at(32),
                    },
                }
            })
            .collect();
        Ok(Self { tiles })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + self.tiles.len() * TILE_BYTES);
        bytes.push(FORMAT);
        // More than 4 billion events in one tile of one key cannot happen
        // in a window that means anything; saturate rather than wrap.
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        for t in &self.tiles {
            bytes.extend_from_slice(&t.bucket.to_le_bytes());
            bytes.extend_from_slice(&count(t.totals.events).to_le_bytes());
            bytes.extend_from_slice(&count(t.totals.values).to_le_bytes());
            bytes.extend_from_slice(&t.totals.sum.to_le_bytes());
            bytes.extend_from_slice(&t.totals.min.to_le_bytes());
            bytes.extend_from_slice(&t.totals.max.to_le_bytes());
        }
        bytes
    }

    /// The newest bucket of an encoded value, read without decoding it all
    /// (for the compaction filter).
    pub fn newest_encoded(bytes: &[u8]) -> Option<i64> {
        let start = bytes.len().checked_sub(TILE_BYTES)?;
        (start >= 1 && bytes.first() == Some(&FORMAT))
            .then(|| {
                bytes[start..start + 8]
                    .try_into()
                    .ok()
                    .map(i64::from_le_bytes)
            })
            .flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    pub fn newest(&self) -> Option<i64> {
        self.tiles.last().map(|t| t.bucket)
    }

    /// Folds one event into its tile.
    pub fn add(&mut self, bucket: i64, value: Option<f64>) {
        let at = self.tiles.partition_point(|t| t.bucket < bucket);
        if self.tiles.get(at).is_none_or(|t| t.bucket != bucket) {
            self.tiles.insert(
                at,
                Tile {
                    bucket,
                    totals: Summary::default(),
                },
            );
        }
        self.tiles[at].totals.add(value);
    }

    /// Drops the tiles before `oldest_kept`.
    pub fn expire(&mut self, oldest_kept: i64) {
        let cut = self.tiles.partition_point(|t| t.bucket < oldest_kept);
        self.tiles.drain(..cut);
    }

    /// For each of `lengths` (in tiles, shortest first), the events of the
    /// `length` buckets ending at `to`, into `out`: one walk back from
    /// `to`, each window's sum taken where its first tile is passed.
    pub fn nested_summaries(&self, to: i64, lengths: &[i64], out: &mut Vec<Summary>) {
        out.clear();
        let mut below = self.tiles.partition_point(|t| t.bucket <= to);
        let mut summary = Summary::default();
        for &length in lengths {
            let from = to - length + 1;
            while let Some(tile) = below.checked_sub(1).map(|i| &self.tiles[i])
                && tile.bucket >= from
            {
                summary.merge(&tile.totals);
                below -= 1;
            }
            out.push(summary);
        }
    }

    /// The events of buckets `from..=to`, summed alone: what
    /// [`Tiles::nested_summaries`] must give for each window.
    #[cfg(test)]
    pub fn summary(&self, from: i64, to: i64) -> Summary {
        let start = self.tiles.partition_point(|t| t.bucket < from);
        let mut summary = Summary::default();
        for t in self.tiles[start..].iter().take_while(|t| t.bucket <= to) {
            summary.merge(&t.totals);
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_round_trip_and_summarise_a_span() -> Result<(), String> {
        let mut tiles = Tiles::default();
        tiles.add(10, Some(5.0));
        tiles.add(12, Some(1.0));
        tiles.add(10, None);
        tiles.add(11, Some(7.0));
        let tiles = Tiles::decode(&tiles.encode())?;
        assert_eq!(tiles.newest(), Some(12));
        let all = tiles.summary(0, 20);
        assert_eq!(
            (all.events, all.values, all.sum, all.min, all.max),
            (4, 3, 13.0, 1.0, 7.0)
        );
        let late = tiles.summary(11, 12);
        assert_eq!((late.events, late.sum), (2, 8.0));
        assert_eq!(Tiles::newest_encoded(&tiles.encode()), Some(12));
        Ok(())
    }

    #[test]
    fn nested_windows_in_one_walk_equal_each_summed_alone() {
        let mut tiles = Tiles::default();
        for (bucket, value) in [(1, 4.0), (3, 1.0), (4, 9.0), (8, 2.0), (9, 6.0), (12, 3.0)] {
            tiles.add(bucket, Some(value));
        }
        tiles.add(9, None);
        let lengths = [1, 2, 6, 9, 40];
        let mut nested = Vec::new();
        for to in [0, 4, 9, 10, 12, 20] {
            tiles.nested_summaries(to, &lengths, &mut nested);
            let alone: Vec<Summary> = lengths
                .iter()
                .map(|length| tiles.summary(to - length + 1, to))
                .collect();
            // Counts, minima and maxima exactly; sums here are of small
            // whole numbers, so exact in either order too.
            assert_eq!(nested, alone, "windows ending at {to}");
        }
    }

    #[test]
    fn expiry_drops_only_older_tiles() {
        let mut tiles = Tiles::default();
        for bucket in [1, 2, 3, 5] {
            tiles.add(bucket, Some(1.0));
        }
        tiles.expire(3);
        assert_eq!(tiles.summary(i64::MIN, i64::MAX).events, 2);
        tiles.expire(6);
        assert!(tiles.is_empty());
    }

    #[test]
    fn damaged_values_are_refused() {
        assert!(Tiles::decode(&[]).is_err());
        assert!(Tiles::decode(&[9]).unwrap_err().contains("format 9"));
        assert!(
            Tiles::decode(&[FORMAT, 1, 2])
                .unwrap_err()
                .contains("whole number")
        );
    }
}
