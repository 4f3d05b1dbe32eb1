//! `streamscore simulate`: the generator's transactions to an NDJSON file
//! (history for `train`, labels included), or to a topic at a rate, with
//! their labels to a labels topic once a label delay of event time has
//! passed, as a bank's fraud confirmations would arrive.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::parse_duration;
use crate::kafka::clients::ClientBuilder;
use crate::simulate::{Label, Scenario, SimulationConfig, Transaction, simulate_days};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Write NDJSON history here (labels included, for `train`)...
    #[arg(
        long,
        conflicts_with = "to_topic",
        required_unless_present = "to_topic"
    )]
    pub out: Option<PathBuf>,
    /// ...or produce the transactions (without labels) to this topic,
    /// keyed by card.
    #[arg(long)]
    pub to_topic: Option<String>,
    #[arg(long, env = "STREAMSCORE_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Transactions per second to the topic; 0 sends as fast as it can.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// With --to-topic: each transaction's label to this topic, keyed by
    /// card (so a topic with as many partitions as the input puts it in
    /// its transaction's partition number), once --label-delay of event
    /// time has passed.
    #[arg(long, requires = "to_topic")]
    pub labels_topic: Option<String>,
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub label_delay: Duration,
    /// Partitions of the topics when they do not exist yet (they are
    /// created with one replica; an existing topic is used as it is).
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Twice the customers unless set (the handbook's ratio).
    #[arg(long)]
    pub terminals: Option<usize>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The first day (UTC), e.g. 2018-04-01 for the handbook's world;
    /// weekends and nights follow the calendar.
    #[arg(long, value_parser = parse_day)]
    pub start: Option<chrono::DateTime<chrono::Utc>>,
}

/// A date on the command line: its midnight UTC.
fn parse_day(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{text}` is not a date such as 2018-04-01"))
}

/// Transactions and frauds per scenario, as the summary line prints them.
#[derive(Debug, Default)]
struct Tally {
    transactions: usize,
    by_scenario: [usize; 3],
}

impl Tally {
    fn add(&mut self, day: &[Transaction]) {
        self.transactions += day.len();
        for s in day.iter().filter_map(|t| t.scenario) {
            self.by_scenario[s as usize] += 1;
        }
    }

    fn describe(&self) -> String {
        let fraud: usize = self.by_scenario.iter().sum();
        let share = |s: Scenario| 100.0 * self.by_scenario[s as usize] as f64 / fraud.max(1) as f64;
        format!(
            "{} transactions, {fraud} fraud ({:.2}%): {:.0}% large amounts, {:.0}% compromised \
             terminals, {:.0}% leaked cards",
            self.transactions,
            100.0 * fraud as f64 / self.transactions.max(1) as f64,
            share(Scenario::LargeAmount),
            share(Scenario::CompromisedTerminal),
            share(Scenario::LeakedCard),
        )
    }
}

pub async fn run(args: &SimulateArgs) -> anyhow::Result<String> {
    let config = SimulationConfig {
        days: args.days,
        customers: args.customers,
        terminals: args.terminals.unwrap_or(args.customers * 2),
        seed: args.seed,
        start: args.start.unwrap_or(SimulationConfig::default().start),
        ..SimulationConfig::default()
    };
    let mut tally = Tally::default();
    match (&args.out, &args.to_topic) {
        (Some(out), _) => {
            let mut text = Vec::new();
            simulate_days(&config, |day| {
                tally.add(&day);
                for t in &day {
                    serde_json::to_writer(&mut text, t).expect("a transaction serialises");
                    text.push(b'\n');
                }
            });
            std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
            Ok(format!("wrote {} to {}\n", tally.describe(), out.display()))
        }
        (None, Some(topic)) => {
            let mut days = Vec::new();
            simulate_days(&config, |day| {
                tally.add(&day);
                days.push(day);
            });
            let labelled = produce(args, topic, days.iter().flatten()).await?;
            Ok(format!(
                "sent {} to {topic}{}\n",
                tally.describe(),
                match &args.labels_topic {
                    Some(labels) => format!(" and {labelled} labels to {labels}"),
                    None => String::new(),
                }
            ))
        }
        (None, None) => bail!("give --out FILE or --to-topic TOPIC"),
    }
}

/// What goes out, in order: a transaction, or a transaction's label.
#[derive(Debug, Clone, Copy)]
enum Outgoing<'a> {
    Transaction(&'a Transaction),
    Label(&'a Transaction),
}

/// The transactions in their order, each label (with `delay`) placed just
/// before the first transaction whose event time is at or past its own
/// transaction's plus the delay; the labels still due at the end follow.
fn schedule<'a>(
    transactions: impl Iterator<Item = &'a Transaction>,
    delay: Option<chrono::Duration>,
) -> Vec<Outgoing<'a>> {
    let mut out = Vec::new();
    let mut due: VecDeque<&Transaction> = VecDeque::new();
    for t in transactions {
        if let Some(delay) = delay {
            while let Some(labelled) = due.front().filter(|l| l.time + delay <= t.time) {
                out.push(Outgoing::Label(labelled));
                due.pop_front();
            }
            due.push_back(t);
        }
        out.push(Outgoing::Transaction(t));
    }
    out.extend(due.into_iter().map(Outgoing::Label));
    out
}

/// Sends the schedule at the rate asked (transactions per second);
/// returns how many labels were sent.
async fn produce<'a>(
    args: &SimulateArgs,
    topic: &str,
    transactions: impl Iterator<Item = &'a Transaction>,
) -> anyhow::Result<usize> {
    let topics: Vec<&str> = std::iter::once(topic)
        .chain(args.labels_topic.as_deref())
        .collect();
    crate::kafka::admin::ensure_topics(&args.brokers, &topics, args.partitions)
        .await
        .with_context(|| format!("cannot create {}", topics.join(" and ")))?;
    let producer: FutureProducer = ClientBuilder::producer(&args.brokers)
        .create()
        .context("cannot create the producer")?;
    let delay = match &args.labels_topic {
        Some(_) => {
            Some(chrono::Duration::from_std(args.label_delay).context("label delay too long")?)
        }
        None => None,
    };
    let mut sends = Vec::new();
    let (mut sent, mut labels) = (0usize, 0usize);
    let started = Instant::now();
    for outgoing in schedule(transactions, delay) {
        let (to, t, payload) = match outgoing {
            Outgoing::Transaction(t) => {
                if args.rate > 0 {
                    let at = Duration::from_secs_f64(sent as f64 / f64::from(args.rate));
                    if let Some(wait) = at.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                sent += 1;
                // A live stream does not know its labels yet.
                let mut value = serde_json::to_value(t)?;
                if let Some(object) = value.as_object_mut() {
                    object.remove("is_fraud");
                }
                (topic, t, serde_json::to_vec(&value)?)
            }
            Outgoing::Label(t) => {
                labels += 1;
                let label = Label::of(t);
                let to = args.labels_topic.as_deref().unwrap_or(topic);
                (to, t, serde_json::to_vec(&label)?)
            }
        };
        sends.push(
            producer
                .send_result(
                    FutureRecord::to(to)
                        .key(t.card_id.as_bytes())
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)?,
        );
        if sends.len() >= 10_000 {
            await_all(&mut sends).await?;
        }
    }
    await_all(&mut sends).await?;
    Ok(labels)
}

type Pending = rdkafka::producer::DeliveryFuture;

async fn await_all(sends: &mut Vec<Pending>) -> anyhow::Result<()> {
    for delivery in futures::future::join_all(sends.drain(..)).await {
        match delivery {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("the broker refused a record: {e}"),
            Err(_) => bail!("the producer went away before a record was acknowledged"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::simulate;

    #[test]
    fn each_label_follows_its_delay_in_event_time_and_comes_once() {
        let transactions = simulate(&SimulationConfig {
            customers: 50,
            terminals: 100,
            days: 5,
            ..SimulationConfig::default()
        });
        let delay = chrono::Duration::days(1);
        let order = schedule(transactions.iter(), Some(delay));
        assert_eq!(order.len(), 2 * transactions.len());
        // Walking back, the time of the next transaction sent: a label
        // goes out just before the stream reaches its time plus the delay.
        let mut next_time = None;
        let mut labelled = std::collections::HashSet::new();
        for outgoing in order.iter().rev() {
            match outgoing {
                Outgoing::Transaction(t) => next_time = Some(t.time),
                Outgoing::Label(t) => {
                    assert!(
                        labelled.insert(&t.event_id),
                        "{} labelled twice",
                        t.event_id
                    );
                    assert!(
                        next_time.is_none_or(|next| next >= t.time + delay),
                        "label of {} too early",
                        t.event_id
                    );
                }
            }
        }
        // Nor later: walking forward, no label is due (its time plus the
        // delay reached) when a transaction goes out.
        let mut pending = std::collections::VecDeque::new();
        for outgoing in &order {
            match outgoing {
                Outgoing::Transaction(t) => {
                    assert!(
                        pending.front().is_none_or(|&due| due > t.time),
                        "a label waited"
                    );
                    pending.push_back(t.time + delay);
                }
                Outgoing::Label(_) => {
                    pending.pop_front();
                }
            }
        }
        assert!(
            schedule(transactions.iter(), None)
                .iter()
                .all(|o| matches!(o, Outgoing::Transaction(_)))
        );
    }
}
