//! The tile format's round trips, its sizes, the formats still read, and
//! damaged values refused.

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
fn the_compact_format_round_trips_every_float_and_gap() -> Result<(), String> {
    let mut tiles = Tiles::default();
    // Counts only; one value; several; a NaN, a negative zero and an
    // infinity, whose min and max are not their sum; buckets far apart
    // and before the epoch.
    tiles.add(-5_000_000_000, None);
    tiles.add(-3, Some(7.5));
    tiles.add(0, Some(1.0));
    tiles.add(0, Some(-2.0));
    tiles.add(1, Some(f64::NAN));
    tiles.add(2, Some(-0.0));
    tiles.add(3, Some(f64::INFINITY));
    tiles.add(3, None);
    tiles.add(i64::from(u32::MAX) * 4, Some(1e300));
    // Hundredths, negative ones, and sums that are not whole
    // hundredths (0.1 + 0.2 is not 0.3) or too many of them.
    tiles.add(10, Some(57.23));
    tiles.add(11, Some(-0.01));
    tiles.add(12, Some(0.1));
    tiles.add(12, Some(0.2));
    tiles.add(13, Some(123_456.78));
    tiles.add(13, Some(9.0e13));
    for tag_of_two_bytes in 0..9 {
        tiles.add(14, Some(f64::from(tag_of_two_bytes) * 0.5));
    }
    let bytes = tiles.encode();
    let decoded = Tiles::decode(&bytes)?;
    assert_eq!(decoded.tiles.len(), tiles.tiles.len());
    for (a, b) in decoded.tiles.iter().zip(&tiles.tiles) {
        assert_eq!(a.bucket, b.bucket);
        let bits = |s: &Summary| {
            (
                s.events,
                s.values,
                s.sum.to_bits(),
                s.min.to_bits(),
                s.max.to_bits(),
            )
        };
        assert_eq!(bits(&a.totals), bits(&b.totals), "bucket {}", a.bucket);
    }
    assert_eq!(Tiles::newest_encoded(&bytes), tiles.newest());
    assert_eq!(Tiles::decode(&Tiles::default().encode())?, Tiles::default());
    Ok(())
}

#[test]
fn an_hour_of_one_event_takes_a_few_bytes() {
    let mut counts = Tiles::default();
    let mut amounts = Tiles::default();
    for hour in 0..720 {
        counts.add(1_000 + hour * 2, None);
        amounts.add(1_000 + hour * 2, Some(42.5));
    }
    // 40 bytes a tile in the fixed format; here the format byte, the
    // newest bucket, the two-byte count of tiles and first tile's
    // two-byte distance back, then 3 bytes a count and 5 an amount in
    // cents (its 4,250 hundredths in two).
    assert_eq!(counts.encode().len(), 1 + 8 + 2 + 1 + 720 * 3);
    assert_eq!(amounts.encode().len(), 1 + 8 + 2 + 1 + 720 * 5);
    // A float that is not a whole number of hundredths takes 8.
    let mut thirds = Tiles::default();
    thirds.add(1_000, Some(1.0 / 3.0));
    assert_eq!(thirds.encode().len(), 1 + 8 + 1 + 3 + 8);
}

#[test]
fn a_value_encoded_after_its_old_bytes_is_the_value_encoded_afresh() -> Result<(), String> {
    // Seeded, so that a failure comes back the same.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut copied = 0;
    for case in 0..2_000 {
        let mut tiles = Tiles::default();
        for _ in 0..next(40) {
            let value = match next(4) {
                0 => None,
                1 => Some(next(100_000) as f64 / 100.0),
                2 => Some(1.0 / (1 + next(7)) as f64),
                _ => Some(next(3) as f64),
            };
            tiles.add(1_000 + next(200) as i64, value);
        }
        let old = tiles.encode();
        let mut offsets = Vec::new();
        let mut changed = Tiles::decode_noting(&old, Some(&mut offsets))?;
        // Each tile's start and the end (a value of no tiles: none).
        let noted = if changed.is_empty() {
            0
        } else {
            changed.tiles.len() + 1
        };
        assert_eq!(offsets.len(), noted, "case {case}");
        // What a batch does to a key: events mostly at or after its
        // newest tile, now and then before it; the oldest tiles
        // expiring.
        for _ in 0..next(4) {
            let newest = changed.newest().unwrap_or(1_100);
            let bucket = match next(5) {
                0 => newest - next(50) as i64,
                _ => newest + next(3) as i64,
            };
            changed.add(bucket, Some(next(10_000) as f64 / 100.0));
            if next(2) == 0 {
                changed.expire(changed.newest().unwrap_or(0) - 150 + next(60) as i64);
            }
        }
        assert_eq!(
            changed.encode_after(&old, &offsets),
            changed.encode(),
            "case {case}"
        );
        copied += usize::from(changed.first_changed.min(changed.tiles.len()) >= 2);
    }
    assert!(copied > 500, "only {copied} cases copied tiles");
    Ok(())
}

#[test]
fn values_in_the_second_format_still_read() -> Result<(), String> {
    // Newest bucket 12, two tiles: bucket 10 (2 events, one value, 5.0:
    // its sum alone), bucket 12 (3 events, values 1.0, 2.0 and 3.0).
    let mut bytes = vec![RAW_FLOATS_FORMAT];
    bytes.extend_from_slice(&12i64.to_le_bytes());
    bytes.extend_from_slice(&[2, 2, 2, 1 << 1]);
    bytes.extend_from_slice(&5.0f64.to_le_bytes());
    bytes.extend_from_slice(&[2, 3, 3 << 1 | 1]);
    for float in [6.0f64, 1.0, 3.0] {
        bytes.extend_from_slice(&float.to_le_bytes());
    }
    let tiles = Tiles::decode(&bytes)?;
    assert_eq!(Tiles::newest_encoded(&bytes), Some(12));
    let old = tiles.summary(10, 10);
    assert_eq!((old.events, old.values, old.min, old.max), (2, 1, 5.0, 5.0));
    let all = tiles.summary(0, 20);
    assert_eq!(
        (all.events, all.values, all.sum, all.min, all.max),
        (5, 4, 11.0, 1.0, 5.0)
    );
    assert_eq!(Tiles::decode(&tiles.encode())?, tiles);
    Ok(())
}

#[test]
fn values_in_the_first_format_still_read() -> Result<(), String> {
    let mut bytes = vec![FIXED_FORMAT];
    for (bucket, events, values, sum, min, max) in [
        (10i64, 2u32, 1u32, 5.0f64, 5.0f64, 5.0f64),
        (12, 1, 1, 1.0, 1.0, 1.0),
    ] {
        bytes.extend_from_slice(&bucket.to_le_bytes());
        bytes.extend_from_slice(&events.to_le_bytes());
        bytes.extend_from_slice(&values.to_le_bytes());
        for float in [sum, min, max] {
            bytes.extend_from_slice(&float.to_le_bytes());
        }
    }
    let tiles = Tiles::decode(&bytes)?;
    assert_eq!(Tiles::newest_encoded(&bytes), Some(12));
    let all = tiles.summary(0, 20);
    assert_eq!((all.events, all.values, all.sum), (3, 2, 6.0));
    // Written again, it is in the compact format and says the same.
    let again = tiles.encode();
    assert_eq!(again[0], FORMAT);
    assert_eq!(Tiles::decode(&again)?, tiles);
    Ok(())
}

#[test]
fn varints_round_trip_and_overlong_ones_are_refused() {
    for value in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
        let mut bytes = Vec::new();
        encode_varint(value, &mut bytes);
        // LEB128: seven bits a byte, the high bit set on all but the last.
        assert_eq!(
            bytes.len(),
            (64 - value.leading_zeros() as usize).max(1).div_ceil(7)
        );
        let mut rest = bytes.as_slice();
        assert_eq!(decode_varint(&mut rest), Some(value));
        assert!(rest.is_empty());
        // Cut short, it is refused.
        assert_eq!(decode_varint(&mut &bytes[..bytes.len() - 1]), None);
    }
    // Eleven bytes, or a tenth byte beyond a u64's top bit.
    assert_eq!(decode_varint(&mut &[0x80u8; 10][..]), None);
    let mut too_big = vec![0xffu8; 9];
    too_big.push(0x02);
    assert_eq!(decode_varint(&mut too_big.as_slice()), None);
}

#[test]
fn damaged_values_are_refused() {
    assert!(Tiles::decode(&[]).is_err());
    assert!(Tiles::decode(&[9]).unwrap_err().contains("format 9"));
    assert!(
        Tiles::decode(&[FIXED_FORMAT, 1, 2])
            .unwrap_err()
            .contains("whole number")
    );
    let mut tiles = Tiles::default();
    tiles.add(100, Some(3.0));
    tiles.add(104, Some(4.0));
    let bytes = tiles.encode();
    // Cut anywhere, the value is refused, never misread.
    for cut in 2..bytes.len() {
        assert!(Tiles::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    assert!(Tiles::decode(&[FORMAT, 1, 2]).is_err());
}
