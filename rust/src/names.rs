//! Unique, readable node names: `<target name>_<n>`, one counter per target name.

use std::collections::HashMap;

use crate::error::GraphError;
use crate::graph::NodeId;

/// Name <-> id index plus the per-target-name counters (`Graph.name_idx`).
#[derive(Debug, Default, Clone)]
pub struct Names {
    by_name: HashMap<String, NodeId>,
    names: Vec<String>,
    /// target name -> how many nodes were added with that target name; kept in first-use order.
    counters: Vec<(String, u64)>,
    counter_index: HashMap<String, usize>,
}

impl Names {
    /// Chooses the name of the next node without recording it (so a refused node changes nothing).
    ///
    /// An explicit `name` must be free. Otherwise the name is `<target>_<k>` for the first free
    /// `k >= name_idx[target]`, so an automatic name never collides with an explicit one.
    pub fn choose(&self, name: Option<&str>, target_name: &str) -> Result<String, GraphError> {
        if let Some(name) = name {
            if self.by_name.contains_key(name) {
                return Err(GraphError::DuplicateName(name.to_owned()));
            }
            return Ok(name.to_owned());
        }
        let mut k = self.count(target_name);
        loop {
            let candidate = format!("{target_name}_{k}");
            if !self.by_name.contains_key(&candidate) {
                return Ok(candidate);
            }
            k += 1;
        }
    }

    /// Records `name` (from [`Names::choose`]) for node `id`, counting it under `target_name`.
    pub fn insert(&mut self, name: String, target_name: &str, id: NodeId) {
        match self.counter_index.get(target_name) {
            Some(&slot) => self.counters[slot].1 += 1,
            None => {
                self.counter_index
                    .insert(target_name.to_owned(), self.counters.len());
                self.counters.push((target_name.to_owned(), 1));
            }
        }
        self.by_name.insert(name.clone(), id);
        self.names.push(name);
    }

    /// How many nodes were added with this target name (`name_idx[target_name]`).
    pub fn count(&self, target_name: &str) -> u64 {
        self.counter_index
            .get(target_name)
            .map_or(0, |&slot| self.counters[slot].1)
    }

    pub fn id_of(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    pub fn name_of(&self, id: NodeId) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    /// Names in insertion (= id) order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// `(target name, count)` pairs in first-use order.
    pub fn counters(&self) -> &[(String, u64)] {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(names: &mut Names, name: Option<&str>, target: &str) -> Result<String, GraphError> {
        let chosen = names.choose(name, target)?;
        let id = names.names().len() as NodeId;
        names.insert(chosen.clone(), target, id);
        Ok(chosen)
    }

    #[test]
    fn automatic_names_count_per_target() {
        let mut names = Names::default();
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_0");
        assert_eq!(add(&mut names, None, "mul").unwrap(), "mul_0");
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_1");
        assert_eq!(names.count("add"), 2);
        assert_eq!(names.id_of("add_1"), Some(2));
        assert_eq!(names.name_of(1), Some("mul_0"));
    }

    #[test]
    fn automatic_names_skip_explicit_ones() {
        let mut names = Names::default();
        assert_eq!(add(&mut names, Some("add_1"), "sub").unwrap(), "add_1");
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_0");
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_2");
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_3");
    }

    #[test]
    fn duplicate_explicit_name_is_refused_and_changes_nothing() {
        let mut names = Names::default();
        add(&mut names, Some("x"), "add").unwrap();
        assert_eq!(
            add(&mut names, Some("x"), "add"),
            Err(GraphError::DuplicateName("x".into()))
        );
        assert_eq!(names.count("add"), 1);
        assert_eq!(names.names().len(), 1);
    }
}
