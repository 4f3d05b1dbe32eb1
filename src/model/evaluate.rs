//! Fraud metrics over scored, labelled rows.

/// Area under the ROC curve: the chance that a random fraud scores above a
/// random genuine event (ties count half). `None` without both classes.
pub fn auc_roc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Mann-Whitney U: sum of the positives' ranks, with tied groups sharing
    // their mean rank.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < pairs.len() {
        let end = start
            + pairs[start..]
                .iter()
                .take_while(|p| p.0 == pairs[start].0)
                .count();
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        rank_sum += mean_rank * pairs[start..end].iter().filter(|p| p.1).count() as f64;
        start = end;
    }
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives * negatives) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_cases() {
        assert_eq!(
            auc_roc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auc_roc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auc_roc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // sklearn.metrics.roc_auc_score([0,1,0,1,1], [.1,.4,.35,.8,.35]) == 0.91666...
        let auc = auc_roc(
            &[0.1, 0.4, 0.35, 0.8, 0.35],
            &[false, true, false, true, true],
        )
        .unwrap();
        assert!((auc - 11.0 / 12.0).abs() < 1e-12, "{auc}");
        assert_eq!(auc_roc(&[0.1], &[true]), None);
    }
}
