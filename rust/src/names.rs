//! Unique, readable node names: `<target name>_<n>`, one counter per target name.
//!
//! Automatic names are stored as `(target, n)` pairs and only spelled out when asked for, so
//! adding a node allocates no string and touches no name hash map (memory traffic is what
//! `add` pays for). Explicit names live in a hash map of their own. Looking a name up tries the
//! explicit map, then parses `<target>_<n>`: the part after the last `_` is a canonical decimal
//! number, so two different `(target, n)` pairs never spell the same name.

use rustc_hash::FxHashMap;

use crate::error::GraphError;
use crate::id::NodeId;

const NO_NODE: NodeId = NodeId::MAX;

#[derive(Debug, Clone)]
enum Name {
    Auto { target: u32, n: u32 },
    Explicit(Box<str>),
}

#[derive(Debug, Clone)]
struct Target {
    name: String,
    /// Nodes added with this target name (`name_idx[target]`), explicit names included.
    count: u64,
    /// `by_n[n]`: the node automatically named `<target>_<n>`, or `NO_NODE`.
    by_n: Vec<NodeId>,
}

/// A name picked by [`Names::choose`], recorded by [`Names::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    Auto(u32),
    Explicit(String),
}

/// Name <-> id index plus the per-target-name counters (`Graph.name_idx`).
#[derive(Debug, Default, Clone)]
pub struct Names {
    names: Vec<Name>,
    targets: Vec<Target>,
    target_index: FxHashMap<String, u32>,
    explicit: FxHashMap<String, NodeId>,
}

impl Names {
    /// An empty index with room for `nodes` names.
    pub fn with_capacity(nodes: usize) -> Self {
        Self {
            names: Vec::with_capacity(nodes),
            ..Self::default()
        }
    }

    /// Chooses the name of the next node without recording it (so a refused node changes nothing).
    ///
    /// An explicit `name` must be free. Otherwise the name is `<target>_<n>` for the first free
    /// `n >= name_idx[target]`, so an automatic name never collides with an explicit one.
    pub fn choose(&self, name: Option<&str>, target_name: &str) -> Result<Chosen, GraphError> {
        if let Some(name) = name {
            if self.id_of(name).is_some() {
                return Err(GraphError::DuplicateName(name.to_owned()));
            }
            return Ok(Chosen::Explicit(name.to_owned()));
        }
        let target = self
            .target_index
            .get(target_name)
            .map(|&t| &self.targets[t as usize]);
        let mut n = target.map_or(0, |t| t.count) as u32;
        loop {
            let auto_taken = target
                .and_then(|t| t.by_n.get(n as usize))
                .is_some_and(|&id| id != NO_NODE);
            let explicit_taken = !self.explicit.is_empty()
                && self.explicit.contains_key(&format!("{target_name}_{n}"));
            if !auto_taken && !explicit_taken {
                return Ok(Chosen::Auto(n));
            }
            n += 1;
        }
    }

    /// Records the name chosen for node `id`, counting it under `target_name`.
    pub fn insert(&mut self, chosen: Chosen, target_name: &str, id: NodeId) {
        let t = match self.target_index.get(target_name) {
            Some(&t) => t,
            None => {
                let t = self.targets.len() as u32;
                self.target_index.insert(target_name.to_owned(), t);
                self.targets.push(Target {
                    name: target_name.to_owned(),
                    count: 0,
                    by_n: Vec::new(),
                });
                t
            }
        };
        let target = &mut self.targets[t as usize];
        target.count += 1;
        match chosen {
            Chosen::Auto(n) => {
                if target.by_n.len() <= n as usize {
                    target.by_n.resize(n as usize + 1, NO_NODE);
                }
                target.by_n[n as usize] = id;
                self.names.push(Name::Auto { target: t, n });
            }
            Chosen::Explicit(name) => {
                self.explicit.insert(name.clone(), id);
                self.names.push(Name::Explicit(name.into_boxed_str()));
            }
        }
    }

    /// How many nodes were added with this target name (`name_idx[target_name]`).
    pub fn count(&self, target_name: &str) -> u64 {
        self.target_index
            .get(target_name)
            .map_or(0, |&t| self.targets[t as usize].count)
    }

    pub fn id_of(&self, name: &str) -> Option<NodeId> {
        if let Some(&id) = self.explicit.get(name) {
            return Some(id);
        }
        let (target, n) = name.rsplit_once('_')?;
        let canonical = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'));
        if !canonical {
            return None;
        }
        let n: usize = n.parse().ok()?;
        let t = *self.target_index.get(target)?;
        let id = *self.targets[t as usize].by_n.get(n)?;
        (id != NO_NODE).then_some(id)
    }

    pub fn name_of(&self, id: NodeId) -> Option<String> {
        Some(match self.names.get(id as usize)? {
            Name::Auto { target, n } => format!("{}_{n}", self.targets[*target as usize].name),
            Name::Explicit(name) => name.to_string(),
        })
    }

    /// The name node `id` was given explicitly, or None for an automatic one (or no node).
    pub fn explicit_name(&self, id: NodeId) -> Option<&str> {
        match self.names.get(id as usize)? {
            Name::Explicit(name) => Some(name),
            Name::Auto { .. } => None,
        }
    }

    /// Number of names (= nodes).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `(target name, count)` pairs in first-use order.
    pub fn counters(&self) -> impl Iterator<Item = (&str, u64)> {
        self.targets.iter().map(|t| (t.name.as_str(), t.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_names_are_told_apart_from_automatic_ones() {
        let mut names = Names::with_capacity(2);
        let auto = names.choose(None, "add").unwrap();
        names.insert(auto, "add", 0);
        let explicit = names.choose(Some("mine"), "add").unwrap();
        names.insert(explicit, "add", 1);
        assert_eq!(names.explicit_name(0), None);
        assert_eq!(names.explicit_name(1), Some("mine"));
        assert_eq!(names.explicit_name(2), None);
    }

    fn add(names: &mut Names, name: Option<&str>, target: &str) -> Result<String, GraphError> {
        let chosen = names.choose(name, target)?;
        let id = names.len() as NodeId;
        names.insert(chosen, target, id);
        Ok(names.name_of(id).unwrap())
    }

    #[test]
    fn automatic_names_count_per_target() {
        let mut names = Names::default();
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_0");
        assert_eq!(add(&mut names, None, "mul").unwrap(), "mul_0");
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_1");
        assert_eq!(names.count("add"), 2);
        assert_eq!(names.id_of("add_1"), Some(2));
        assert_eq!(names.name_of(1).as_deref(), Some("mul_0"));
    }

    #[test]
    fn automatic_names_skip_explicit_and_earlier_automatic_ones() {
        let mut names = Names::default();
        assert_eq!(add(&mut names, Some("add_1"), "sub").unwrap(), "add_1");
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_0");
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_2");
        assert_eq!(add(&mut names, None, "add").unwrap(), "add_3");
        assert_eq!(names.count("sub"), 1);
        assert_eq!(names.id_of("add_1"), Some(0));
    }

    #[test]
    fn duplicate_names_are_refused_and_change_nothing() {
        let mut names = Names::default();
        add(&mut names, Some("x"), "add").unwrap();
        add(&mut names, None, "add").unwrap();
        for taken in ["x", "add_1"] {
            assert_eq!(
                add(&mut names, Some(taken), "add"),
                Err(GraphError::DuplicateName(taken.into()))
            );
        }
        assert_eq!(names.count("add"), 2);
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn lookups_only_accept_canonical_numbers() {
        let mut names = Names::default();
        add(&mut names, None, "add").unwrap();
        add(&mut names, None, "my_op").unwrap();
        assert_eq!(names.id_of("add_0"), Some(0));
        assert_eq!(names.id_of("my_op_0"), Some(1));
        for absent in [
            "add_00", "add_+0", "add_", "add", "add_1", "sub_0", "_0", "",
        ] {
            assert_eq!(names.id_of(absent), None, "{absent}");
        }
    }
}
