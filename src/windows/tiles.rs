//! A key's window history as time tiles: per tile (a fixed span of event
//! time), the events, the non-null values, their sum, min and max. Adding
//! an event touches one tile and a window query sums the tiles it covers,
//! so both cost the same however long the history is; tiles older than the
//! longest window are dropped.

/// Appends `value` as a varint (LEB128, as protobuf writes it). Written
/// here, inlined, rather than called through prost's generic buffer: a
/// key's tiles are a few varints each, and the calls were much of the
/// encoding's time in a profile (bench/RESULTS.md, session 13).
#[inline(always)]
fn encode_varint(mut value: u64, bytes: &mut Vec<u8>) {
    while value >= 0x80 {
        bytes.push(value as u8 | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

/// Takes a varint from the front of `rest`; none where it is cut short or
/// longer than a u64.
#[inline(always)]
fn decode_varint(rest: &mut &[u8]) -> Option<u64> {
    // Most are one byte: a tile's gap, events and values.
    let (&first, tail) = rest.split_first()?;
    if first < 0x80 {
        *rest = tail;
        return Some(u64::from(first));
    }
    let mut value = 0u64;
    for (i, &byte) in rest.iter().enumerate().take(10) {
        // The tenth byte holds the top bit of a u64, and nothing more.
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

/// How a key's tiles are written: varints and only the floats a tile
/// needs, so that an hour tile of one event is a few bytes, not 40. Every
/// byte of it is copied, checksummed and logged again each time the key
/// changes (RocksDB's WAL and memtable, the changelog), so its size is
/// much of the state path's cost (ARCHITECTURE.md §2; bench/RESULTS.md).
/// A float that is a whole number of hundredths (an amount in cents, as
/// payments are) is written as its hundredths, a varint of 2 or 3 bytes
/// rather than 8.
const FORMAT: u8 = 3;
/// The second format, still read: [`FORMAT`] with every float in 8 bytes.
const RAW_FLOATS_FORMAT: u8 = 2;
/// The first format, still read: 40 bytes a tile (bucket, events, values,
/// sum, min, max), fixed width.
const FIXED_FORMAT: u8 = 1;
const FIXED_TILE_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 8;

/// The hundredths `value` is a whole number of, where dividing them by 100
/// gives `value` back bit for bit (a parsed "57.23" is: the division and
/// the parse both round to the double nearest 57.23). Not for a negative
/// zero, a NaN, an infinity or a value past 2^53 hundredths.
#[inline(always)]
fn hundredths(value: f64) -> Option<i64> {
    let scaled = value * 100.0;
    // Past 2^53 hundredths, or not finite (a NaN too).
    if scaled.is_nan() || scaled.abs() >= 9.0e15 {
        return None;
    }
    // Rounded by hand: `f64::round` is a libm call on baseline x86-64.
    // The check below decides, however it was rounded.
    let whole = (scaled + 0.5f64.copysign(scaled)) as i64;
    ((whole as f64 / 100.0).to_bits() == value.to_bits()).then_some(whole)
}

/// Appends `value`: its hundredths as a zigzag varint where it has them
/// (true), else its 8 bytes.
#[inline(always)]
fn encode_float(value: f64, bytes: &mut Vec<u8>) -> bool {
    match hundredths(value) {
        Some(whole) => {
            encode_varint(((whole << 1) ^ (whole >> 63)) as u64, bytes);
            true
        }
        None => {
            bytes.extend_from_slice(&value.to_le_bytes());
            false
        }
    }
}

/// Takes a float from the front of `rest`, written as [`encode_float`]
/// wrote it (`hundredths`: as a varint).
#[inline(always)]
fn decode_float(rest: &mut &[u8], hundredths: bool) -> Result<f64, String> {
    if hundredths {
        let zigzag = decode_varint(rest).ok_or("a damaged varint")?;
        let whole = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        return Ok(whole as f64 / 100.0);
    }
    let (bytes, after) = rest.split_first_chunk::<8>().ok_or("a value cut short")?;
    *rest = after;
    Ok(f64::from_le_bytes(*bytes))
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Tile {
    /// Event time divided by the tile span (floor).
    bucket: i64,
    /// Its events; stored with 32-bit counts.
    totals: Summary,
}

/// The tiles of one key, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Tiles {
    tiles: Vec<Tile>,
    /// Since decoded: the tiles expired from the front, and the position
    /// of the first tile added or changed (`usize::MAX`: none). The tiles
    /// between are as the value has them: [`Tiles::encode_after`] copies
    /// their bytes. Built rather than decoded: nothing to copy.
    dropped: usize,
    first_changed: usize,
}

impl PartialEq for Tiles {
    /// The same tiles, however they came to be.
    fn eq(&self, other: &Self) -> bool {
        self.tiles == other.tiles
    }
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
    #[cfg(test)]
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        Self::decode_noting(bytes, None)
    }

    /// As [`Tiles::decode`], appending to `offsets` (when given) where in
    /// `bytes` each tile starts, and then its end, for
    /// [`Tiles::encode_after`]; nothing for a value in an older format.
    pub fn decode_noting(bytes: &[u8], offsets: Option<&mut Vec<u32>>) -> Result<Self, String> {
        let Some((&format, body)) = bytes.split_first() else {
            return Err("empty value".into());
        };
        match format {
            FORMAT => decode_compact(body, Floats::MaybeHundredths, offsets),
            RAW_FLOATS_FORMAT => decode_compact(body, Floats::Raw, None),
            FIXED_FORMAT => decode_fixed(body),
            other => Err(format!(
                "tile format {other}, this build reads {FIXED_FORMAT} to {FORMAT}"
            )),
        }
    }

    /// The compact format ([`FORMAT`]): the newest bucket in full, the
    /// number of tiles, then per tile, oldest first, its distance from the
    /// tile before (the first: from the newest), its events, a tag (its
    /// values, whether its floats are all there, and which of them are
    /// hundredths) as varints, and only the floats it needs.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_copying(None)
    }

    /// As [`Tiles::encode`], for tiles decoded from `old` with its tiles'
    /// `offsets` ([`Tiles::decode_noting`]): the bytes of the tiles
    /// unchanged since are copied, not encoded again. A key's events land
    /// at its newest end, so most of a value is copied (encoding whole
    /// values was a tenth of the scoring thread; bench/RESULTS.md, session
    /// 15). The same bytes as [`Tiles::encode`], a test holds them equal.
    pub fn encode_after(&self, old: &[u8], offsets: &[u32]) -> Vec<u8> {
        // The new first tile is written afresh (its distance is from the
        // newest); the unchanged ones after it are copied.
        let unchanged = self.first_changed.min(self.tiles.len());
        let copied = match (
            offsets.get(self.dropped + 1),
            offsets.get(self.dropped + unchanged),
        ) {
            (Some(&from), Some(&to)) if unchanged >= 2 && old.first() == Some(&FORMAT) => old
                .get(from as usize..to as usize)
                .map(|bytes| (bytes, unchanged)),
            _ => None,
        };
        self.encode_copying(copied)
    }

    /// The value; `copied`: the bytes of tiles `1..n` to use as they are.
    fn encode_copying(&self, copied: Option<(&[u8], usize)>) -> Vec<u8> {
        let Some(newest) = self.newest() else {
            return vec![FORMAT];
        };
        let mut bytes = Vec::with_capacity(1 + 8 + 2 + self.tiles.len() * 8);
        bytes.push(FORMAT);
        bytes.extend_from_slice(&newest.to_le_bytes());
        encode_varint(self.tiles.len() as u64, &mut bytes);
        let mut before = newest;
        for (i, t) in self.tiles.iter().enumerate() {
            if let Some((copy, n)) = copied
                && (1..n).contains(&i)
            {
                if i == 1 {
                    bytes.extend_from_slice(copy);
                }
                before = t.bucket;
                continue;
            }
            // Oldest first: the first tile's distance back from the newest,
            // each later one's forward from the one before.
            let gap = if i == 0 {
                newest.abs_diff(t.bucket)
            } else {
                t.bucket.abs_diff(before)
            };
            before = t.bucket;
            encode_tile(gap, &t.totals, &mut bytes);
        }
        bytes
    }

    /// The newest bucket of an encoded value, read without decoding it all
    /// (for the compaction filter).
    pub fn newest_encoded(bytes: &[u8]) -> Option<i64> {
        match *bytes.first()? {
            FORMAT | RAW_FLOATS_FORMAT => bytes.get(1..9)?.try_into().ok().map(i64::from_le_bytes),
            FIXED_FORMAT => {
                let start = bytes.len().checked_sub(FIXED_TILE_BYTES)?;
                (start >= 1)
                    .then(|| {
                        bytes[start..start + 8]
                            .try_into()
                            .ok()
                            .map(i64::from_le_bytes)
                    })
                    .flatten()
            }
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    pub fn newest(&self) -> Option<i64> {
        self.tiles.last().map(|t| t.bucket)
    }

    /// Folds one event into its tile.
    pub fn add(&mut self, bucket: i64, value: Option<f64>) {
        let at = self.tiles.partition_point(|t| t.bucket < bucket);
        self.first_changed = self.first_changed.min(at);
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
        self.dropped += cut;
        // A changed tile expired: what follows it is copied no further.
        self.first_changed = self.first_changed.saturating_sub(cut);
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

/// One tile: its distance from the tile before, its events, its tag
/// (values, whether all its floats are there, which are hundredths) and
/// the floats it needs.
#[inline(always)]
fn encode_tile(gap: u64, totals: &Summary, bytes: &mut Vec<u8>) {
    encode_varint(gap, bytes);
    encode_varint(totals.events, bytes);
    let Summary {
        values,
        sum,
        min,
        max,
        ..
    } = *totals;
    // A tile of no values, or of one, is said by its sum alone.
    let implied = match values {
        0 => sum.to_bits() == 0 && min == f64::INFINITY && max == f64::NEG_INFINITY,
        _ => min.to_bits() == sum.to_bits() && max.to_bits() == sum.to_bits(),
    };
    let floats: &[f64] = match (implied, values) {
        (false, _) => &[sum, min, max],
        (true, 0) => &[],
        (true, _) => &[sum],
    };
    // The tag goes before its floats and says how they are
    // written: they are written after a placeholder, and the tag
    // (one byte while a tile has under 8 values) put in its place.
    let tag_at = bytes.len();
    bytes.push(0);
    let mut in_hundredths = 0u64;
    for (nth, &float) in floats.iter().enumerate() {
        if encode_float(float, bytes) {
            in_hundredths |= 1 << nth;
        }
    }
    let tag = values << 4 | in_hundredths << 1 | u64::from(!implied);
    match tag < 0x80 {
        true => bytes[tag_at] = tag as u8,
        false => {
            let mut varint = Vec::with_capacity(10);
            encode_varint(tag, &mut varint);
            bytes.splice(tag_at..=tag_at, varint);
        }
    }
}

/// How a compact value's floats are written.
#[derive(Clone, Copy)]
enum Floats {
    /// Each in 8 bytes ([`RAW_FLOATS_FORMAT`]).
    Raw,
    /// In hundredths where its tile's tag says so ([`FORMAT`]).
    MaybeHundredths,
}

fn decode_compact(
    body: &[u8],
    floats: Floats,
    mut offsets: Option<&mut Vec<u32>>,
) -> Result<Tiles, String> {
    if body.is_empty() {
        return Ok(Tiles::default());
    }
    let (newest, mut rest) = body
        .split_first_chunk::<8>()
        .map(|(newest, rest)| (i64::from_le_bytes(*newest), rest))
        .ok_or("a value shorter than its newest tile")?;
    let count = decode_varint(&mut rest).ok_or("a damaged tile count")?;
    // Room for the tile the session is likely to add, so that adding it
    // does not move them all; a damaged count cannot ask for more than the
    // bytes could hold (3 a tile at least).
    let count = usize::try_from(count)
        .ok()
        .filter(|&count| count <= rest.len() / 3)
        .ok_or("a tile count the value cannot hold")?;
    let mut tiles = Vec::with_capacity(count + 1);
    let mut before = newest;
    // Where in the value (after its format byte) each tile starts.
    let mut noting = |rest: &[u8]| {
        if let Some(offsets) = offsets.as_deref_mut() {
            offsets.push((1 + body.len() - rest.len()) as u32);
        }
    };
    while tiles.len() < count {
        noting(rest);
        let mut varint = || decode_varint(&mut rest).ok_or_else(|| "a damaged varint".to_owned());
        let gap = i64::try_from(varint()?).map_err(|_| "a tile out of range")?;
        let bucket = match tiles.is_empty() {
            true => newest.checked_sub(gap),
            false => before.checked_add(gap),
        }
        .ok_or("a tile out of range")?;
        if (!tiles.is_empty() && gap == 0) || bucket > newest {
            return Err("tiles out of order".into());
        }
        before = bucket;
        let events = varint()?;
        let tag = varint()?;
        // Per float, whether it is in hundredths; the second format's tag
        // has no such bits.
        let (values, mut in_hundredths) = match floats {
            Floats::MaybeHundredths => (tag >> 4, tag >> 1 & 0b111),
            Floats::Raw => (tag >> 1, 0),
        };
        let mut float = || {
            let hundredths = in_hundredths & 1 == 1;
            in_hundredths >>= 1;
            decode_float(&mut rest, hundredths)
        };
        let totals = match (tag & 1 == 1, values) {
            (true, _) => Summary {
                events,
                values,
                sum: float()?,
                min: float()?,
                max: float()?,
            },
            (false, 0) => Summary {
                events,
                ..Summary::default()
            },
            (false, _) => {
                let sum = float()?;
                Summary {
                    events,
                    values,
                    sum,
                    min: sum,
                    max: sum,
                }
            }
        };
        tiles.push(Tile { bucket, totals });
    }
    if tiles.is_empty() || before != newest {
        return Err("the newest tile is not where the value says".into());
    }
    if !rest.is_empty() {
        return Err("bytes after the last tile".into());
    }
    noting(rest);
    Ok(Tiles {
        tiles,
        dropped: 0,
        // Only this format's tiles are copied as they are.
        first_changed: match floats {
            Floats::MaybeHundredths => usize::MAX,
            Floats::Raw => 0,
        },
    })
}

fn decode_fixed(body: &[u8]) -> Result<Tiles, String> {
    if !body.len().is_multiple_of(FIXED_TILE_BYTES) {
        return Err(format!(
            "{} bytes is not a whole number of tiles",
            body.len()
        ));
    }
    let tiles = body
        .chunks_exact(FIXED_TILE_BYTES)
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
    Ok(Tiles {
        tiles,
        ..Tiles::default()
    })
}

#[cfg(test)]
mod tests;
