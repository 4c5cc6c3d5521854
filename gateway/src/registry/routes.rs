//! The routing table: which functions an incoming topic triggers, and the filters the ingest
//! session subscribes to. A plain table, no I/O.

use crate::net::topic;

/// Maps topics to the functions whose trigger filters match them.
#[derive(Debug, Default, Clone)]
pub struct Router {
    routes: Vec<(String, usize)>,
}

impl Router {
    /// Builds the table from each function's trigger filters (index = function index).
    pub fn new<'a>(triggers: impl IntoIterator<Item = &'a [String]>) -> Router {
        let mut routes = Vec::new();
        for (i, filters) in triggers.into_iter().enumerate() {
            for f in filters {
                routes.push((f.clone(), i));
            }
        }
        Router { routes }
    }

    /// The functions `topic` triggers, each once, in function order.
    pub fn route(&self, topic: &str) -> Vec<usize> {
        let mut hits: Vec<usize> = self
            .routes
            .iter()
            .filter(|(f, _)| topic::matches(f, topic))
            .map(|(_, i)| *i)
            .collect();
        hits.sort_unstable();
        hits.dedup();
        hits
    }

    /// The filters to subscribe to: every trigger, minus those another one covers.
    pub fn subscriptions(&self) -> Vec<String> {
        let all: Vec<String> = self.routes.iter().map(|(f, _)| f.clone()).collect();
        topic::minimal_cover(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_topic_can_trigger_several_functions_and_each_once() {
        let a = vec!["sensors/+/temperature".to_string(), "sensors/#".to_string()];
        let b = vec!["sensors/s1/temperature".to_string()];
        let c = vec!["other".to_string()];
        let r = Router::new([a.as_slice(), b.as_slice(), c.as_slice()]);
        assert_eq!(r.route("sensors/s1/temperature"), vec![0, 1]);
        assert_eq!(r.route("sensors/s2/humidity"), vec![0]);
        assert_eq!(r.route("nothing"), Vec::<usize>::new());
        assert_eq!(
            r.subscriptions(),
            vec!["sensors/#".to_string(), "other".to_string()]
        );
    }
}
