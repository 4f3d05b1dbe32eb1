//! Property test: whatever the bytes and whatever the schema (of the
//! supported types and timestamp options), the decoder does not panic, and
//! every input record comes out exactly once, as a row or as a rejection.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{Decoder, RawRecord};
use crate::schema::{FieldSpec, FieldType, RecordSchema};
use crate::timestamp::EpochUnit;

fn field_type() -> impl Strategy<Value = FieldType> {
    prop_oneof![
        Just(FieldType::String),
        Just(FieldType::Float64),
        Just(FieldType::Int64),
        Just(FieldType::Bool),
        Just(FieldType::Timestamp),
    ]
}

fn field(index: usize) -> impl Strategy<Value = FieldSpec> {
    let unit = prop_oneof![
        Just(None),
        Just(Some(EpochUnit::S)),
        Just(Some(EpochUnit::Ms)),
        Just(Some(EpochUnit::Us)),
        Just(Some(EpochUnit::Ns)),
    ];
    let zone = prop_oneof![Just(None), Just(Some("Europe/Paris")), Just(Some("+05:30")),];
    let format = prop_oneof![Just(None), Just(Some("%d/%m/%Y %H:%M")), Just(Some("%s"))];
    (field_type(), any::<bool>(), unit, zone, format).prop_map(
        move |(field_type, required, unit, zone, format)| {
            let mut spec = FieldSpec::new(&format!("f{index}"), field_type, required);
            if field_type == FieldType::Timestamp {
                spec.unit = unit;
                spec.timezone = zone.map(str::to_owned);
                spec.format = format.map(str::to_owned);
            }
            spec
        },
    )
}

fn schema() -> impl Strategy<Value = RecordSchema> {
    (1usize..6)
        .prop_flat_map(|n| (0..n).map(field).collect::<Vec<_>>())
        .prop_map(|fields| {
            RecordSchema::new("t".into(), fields).expect("generated schemas are valid")
        })
}

/// JSON-ish values, with the edge cases that matter for the decoder.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("1e400".to_string()),
        Just("-0".to_string()),
        Just("18446744073709551616".to_string()),
        Just("\"2019-06-03 05:51:33\"".to_string()),
        Just("\"2019-03-31T02:30:00\"".to_string()),
        Just("\"\\ud800\"".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        any::<String>().prop_map(|s| serde_json::Value::from(s).to_string()),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(|items| format!("[{}]", items.join(","))),
            vec(inner, 0..3).prop_map(|items| {
                let pairs: Vec<String> = items.iter().map(|v| format!("\"k\":{v}")).collect();
                format!("{{{}}}", pairs.join(","))
            }),
        ]
    })
}

/// A record: raw bytes, or an object over the schema's keys (and others,
/// duplicates included), sometimes behind a byte-order mark.
fn record() -> impl Strategy<Value = Option<Vec<u8>>> {
    let object = (vec((0usize..8, value()), 0..8), any::<bool>()).prop_map(|(pairs, bom)| {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"f{k}\":{v}")).collect();
        let text = format!("{{{}}}", body.join(","));
        let mut bytes = if bom {
            b"\xEF\xBB\xBF".to_vec()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(text.as_bytes());
        Some(bytes)
    });
    prop_oneof![
        3 => object,
        1 => vec(any::<u8>(), 0..64).prop_map(Some),
        1 => Just(None),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_decoder_accounts_for_every_record_and_never_panics(
        schema in schema(),
        records in vec(record(), 0..24),
        max_record_bytes in 1usize..512,
    ) {
        let decoded = Decoder::new(schema, max_record_bytes)
            .decode(records.iter().map(|r| RawRecord::from(r.as_deref())))
            .expect("decoded columns form a batch");
        prop_assert_eq!(decoded.batch.num_rows(), decoded.source_index.len());
        let mut seen: Vec<usize> = decoded
            .source_index
            .iter()
            .copied()
            .chain(decoded.rejected.iter().map(|r| r.index))
            .collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..records.len()).collect::<Vec<_>>());
    }
}
