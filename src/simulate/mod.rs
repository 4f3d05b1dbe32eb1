//! A card-transaction simulator after the one described in the handbook
//! "Reproducible Machine Learning for Credit Card Fraud Detection":
//! customers and terminals on a 100x100 grid, each customer using the
//! terminals near them, with three fraud scenarios:
//!
//! 1. any amount over 220 is fraud;
//! 2. every day two terminals are compromised for the next 28 days: all their
//!    transactions are fraud;
//! 3. every day three cards leak for the next 14 days: a third of their
//!    transactions are fraud, with the amount multiplied by five.
//!
//! Re-implemented from that description, with a fixed seed for repeatability.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Poisson};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct SimulationConfig {
    pub customers: usize,
    pub terminals: usize,
    pub days: u32,
    pub start: DateTime<Utc>,
    pub seed: u64,
    /// Customers use terminals within this distance on the grid.
    pub radius: f64,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            customers: 1_000,
            terminals: 2_000,
            days: 30,
            start: Utc
                .with_ymd_and_hms(2026, 4, 1, 0, 0, 0)
                .single()
                .expect("a valid date"),
            seed: 7,
            radius: 5.0,
        }
    }
}

/// One simulated transaction, as the JSON the stream carries.
#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    pub event_id: String,
    pub card_id: String,
    pub terminal_id: String,
    pub amount: f64,
    pub event_time: String,
    /// The label; a live stream would not carry it, training data does.
    pub is_fraud: bool,
    #[serde(skip)]
    pub time: DateTime<Utc>,
    /// Which scenario made it fraud (the last that applied), if any.
    #[serde(skip)]
    pub scenario: Option<Scenario>,
}

/// The handbook's three fraud scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Any amount over 220.
    LargeAmount,
    /// A compromised terminal: all its transactions for 28 days.
    CompromisedTerminal,
    /// A leaked card: a third of its transactions for 14 days, amount x5.
    LeakedCard,
}

struct Customer {
    mean_amount: f64,
    std_amount: f64,
    tx_per_day: f64,
    terminals: Vec<usize>,
}

/// Generates every transaction of the simulated period, in time order.
pub fn simulate(config: &SimulationConfig) -> Vec<Transaction> {
    let mut out = Vec::new();
    simulate_days(config, |day| out.extend(day));
    out
}

/// Generates the simulated period a day at a time, each day's transactions
/// in time order, so that a long run (the handbook's 1.75M transactions)
/// need not be held at once.
pub fn simulate_days(config: &SimulationConfig, mut each_day: impl FnMut(Vec<Transaction>)) {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let terminals: Vec<(f64, f64)> = (0..config.terminals)
        .map(|_| (rng.random_range(0.0..100.0), rng.random_range(0.0..100.0)))
        .collect();
    let customers: Vec<Customer> = (0..config.customers)
        .map(|_| {
            let (x, y) = (rng.random_range(0.0..100.0), rng.random_range(0.0..100.0));
            let mean_amount = rng.random_range(5.0..100.0);
            let near = terminals
                .iter()
                .enumerate()
                .filter(|(_, t)| (t.0 - x).hypot(t.1 - y) < config.radius)
                .map(|(i, _)| i)
                .collect();
            Customer {
                mean_amount,
                std_amount: mean_amount / 2.0,
                tx_per_day: rng.random_range(0.0..4.0),
                terminals: near,
            }
        })
        .collect();

    // Scenario 2 and 3: the day each terminal / card is compromised until.
    let mut terminal_compromised_until = vec![0u32; config.terminals];
    let mut card_compromised_until = vec![0u32; config.customers];
    let time_of_day = Normal::new(43_200.0, 20_000.0).expect("valid normal");
    let mut numbered = 0usize;
    for day in 0..config.days {
        let mut out = Vec::new();
        for _ in 0..2 {
            let t = rng.random_range(0..config.terminals.max(1));
            terminal_compromised_until[t] = day + 28;
        }
        for _ in 0..3 {
            let c = rng.random_range(0..config.customers.max(1));
            card_compromised_until[c] = day + 14;
        }
        let day_start = config.start + Duration::days(i64::from(day));
        for (c, customer) in customers.iter().enumerate() {
            if customer.terminals.is_empty() || customer.tx_per_day <= 0.0 {
                continue;
            }
            let count = Poisson::new(customer.tx_per_day).map_or(0.0, |p| p.sample(&mut rng));
            let amount_dist =
                Normal::new(customer.mean_amount, customer.std_amount).expect("positive std");
            for _ in 0..count as usize {
                let second: f64 = time_of_day.sample(&mut rng);
                if !(0.0..86_400.0).contains(&second) {
                    continue;
                }
                let mut amount: f64 = amount_dist.sample(&mut rng);
                if amount < 0.0 {
                    amount = rng.random_range(0.0..customer.mean_amount * 2.0);
                }
                let terminal = customer.terminals[rng.random_range(0..customer.terminals.len())];
                let mut scenario = (amount > 220.0).then_some(Scenario::LargeAmount);
                if terminal_compromised_until[terminal] > day {
                    scenario = Some(Scenario::CompromisedTerminal);
                }
                if card_compromised_until[c] > day && rng.random_range(0..3) == 0 {
                    amount *= 5.0;
                    scenario = Some(Scenario::LeakedCard);
                }
                let time = day_start + Duration::milliseconds((second * 1000.0) as i64);
                out.push(Transaction {
                    event_id: String::new(),
                    card_id: format!("card-{c:05}"),
                    terminal_id: format!("term-{terminal:05}"),
                    amount: (amount * 100.0).round() / 100.0,
                    event_time: time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    is_fraud: scenario.is_some(),
                    time,
                    scenario,
                });
            }
        }
        out.sort_by_key(|t| t.time);
        for t in &mut out {
            numbered += 1;
            t.event_id = format!("tx-{numbered:08}");
        }
        each_day(out);
    }
}

/// A label as the labels topic carries it.
#[derive(Debug, Serialize)]
pub struct Label<'a> {
    pub event_id: &'a str,
    pub card_id: &'a str,
    pub terminal_id: &'a str,
    pub event_time: &'a str,
    pub is_fraud: bool,
}

impl<'a> Label<'a> {
    /// The label of a simulated transaction.
    pub fn of(t: &'a Transaction) -> Self {
        Self {
            event_id: &t.event_id,
            card_id: &t.card_id,
            terminal_id: &t.terminal_id,
            event_time: &t.event_time,
            is_fraud: t.is_fraud,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_repeatable_ordered_and_has_every_scenario_rate_in_range() {
        let config = SimulationConfig {
            customers: 300,
            terminals: 600,
            days: 20,
            ..SimulationConfig::default()
        };
        let a = simulate(&config);
        let b = simulate(&config);
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.event_id == y.event_id && x.amount == y.amount)
        );
        assert!(a.windows(2).all(|w| w[0].time <= w[1].time));
        assert!(a.len() > 5_000, "{}", a.len());
        let fraud = a.iter().filter(|t| t.is_fraud).count() as f64 / a.len() as f64;
        // The handbook's data has about 0.8% fraud; smaller worlds run higher.
        assert!((0.002..0.1).contains(&fraud), "fraud rate {fraud}");
        assert!(a.iter().filter(|t| t.amount > 220.0).all(|t| t.is_fraud));
    }

    /// The handbook's reference run: 5,000 customers, 10,000 terminals, 183
    /// days from 2018-04-01. Its published figures: 1,754,155 transactions,
    /// 14,681 of them fraud (0.84%), of which scenario 1 made about 7%,
    /// scenario 2 about 62% and scenario 3 about 31%.
    #[test]
    fn the_reference_run_matches_the_handbook_statistics() {
        let config = SimulationConfig {
            customers: 5_000,
            terminals: 10_000,
            days: 183,
            start: Utc
                .with_ymd_and_hms(2018, 4, 1, 0, 0, 0)
                .single()
                .expect("a valid date"),
            ..SimulationConfig::default()
        };
        let (mut total, mut by_scenario) = (0usize, [0usize; 3]);
        simulate_days(&config, |day| {
            total += day.len();
            for t in day {
                if let Some(s) = t.scenario {
                    by_scenario[s as usize] += 1;
                }
            }
        });
        let fraud: usize = by_scenario.iter().sum();
        let rate = fraud as f64 / total as f64;
        let shares = by_scenario.map(|n| n as f64 / fraud as f64);
        assert!(
            (1_650_000..1_850_000).contains(&total),
            "{total} transactions"
        );
        assert!((0.0070..0.0100).contains(&rate), "fraud rate {rate}");
        for (share, (low, high)) in shares
            .iter()
            .zip([(0.03, 0.12), (0.52, 0.72), (0.22, 0.40)])
        {
            assert!((low..high).contains(share), "scenario shares {shares:?}");
        }
    }
}
