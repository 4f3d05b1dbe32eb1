//! The decoder on arbitrary bytes: it must not panic, and every record must
//! come out once, as a row or a rejection. The input is split into records
//! at newlines; the first byte picks the schema.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamscore::decode::{Decoder, RawRecord};
use streamscore::schema::{FieldSpec, FieldType, RecordSchema};
use streamscore::timestamp::EpochUnit;

fn schema(choice: u8) -> RecordSchema {
    let mut at = FieldSpec::new("event_time", FieldType::Timestamp, choice % 2 == 0);
    match choice % 4 {
        1 => at.unit = Some(EpochUnit::S),
        2 => at.timezone = Some("Europe/Paris".into()),
        3 => at.format = Some("%d/%m/%Y %H:%M:%S".into()),
        _ => {}
    }
    RecordSchema::new(
        "t".into(),
        vec![
            FieldSpec::new("event_id", FieldType::String, true),
            FieldSpec::new("amount", FieldType::Float64, choice % 3 == 0),
            FieldSpec::new("count", FieldType::Int64, false),
            FieldSpec::new("online", FieldType::Bool, false),
            at,
        ],
    )
    .expect("the fuzz schemas are valid")
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let records: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let decoded = Decoder::new(schema(choice), 4096)
        .decode(records.iter().map(|r| RawRecord::from(*r)))
        .expect("decoded columns form a batch");
    assert_eq!(
        decoded.batch.num_rows() + decoded.rejected.len(),
        records.len()
    );
});
