//! The fixed tree of directories and secret files a mount shows, built
//! once from the configured names.

use std::collections::BTreeMap;
use std::time::Duration;

/// One secret file as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Path inside the mount; `/` separates directories.
    pub path: String,
    /// What the source knows the secret by.
    pub item: String,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// How long a fetched value is kept before it is wiped.
    pub ttl: Duration,
    /// When either list is non-empty, only these uids or groups may open.
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
}

pub const ROOT: u64 = 1;

#[derive(Debug)]
pub enum Node {
    Dir {
        parent: u64,
        children: BTreeMap<String, u64>,
    },
    File {
        spec: FileSpec,
    },
}

/// Inode number `n` is `nodes[n - 1]`; the root is inode 1.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Builds the tree, refusing empty, `.`/`..` or duplicate components,
    /// and a name used both as a file and as a directory.
    pub fn build(files: Vec<FileSpec>) -> Result<Self, String> {
        let mut tree = Self {
            nodes: vec![Node::Dir {
                parent: ROOT,
                children: BTreeMap::new(),
            }],
        };
        for spec in files {
            tree.insert(spec)?;
        }
        Ok(tree)
    }

    fn insert(&mut self, spec: FileSpec) -> Result<(), String> {
        let components: Vec<&str> = spec.path.split('/').collect();
        if components
            .iter()
            .any(|part| part.is_empty() || *part == "." || *part == "..")
        {
            return Err(format!(
                "file name {:?} has an empty, . or .. component",
                spec.path
            ));
        }
        let (name, dirs) = components
            .split_last()
            .expect("split yields one part at least");
        let mut dir = ROOT;
        for part in dirs {
            dir = match self.child(dir, part) {
                Some(ino) if self.is_dir(ino) => ino,
                Some(_) => return Err(format!("{:?} is a file and a directory", spec.path)),
                None => self.add(
                    dir,
                    part,
                    Node::Dir {
                        parent: dir,
                        children: BTreeMap::new(),
                    },
                ),
            };
        }
        if self.child(dir, name).is_some() {
            return Err(format!("file name {:?} is given twice", spec.path));
        }
        let name = (*name).to_owned();
        self.add(dir, &name, Node::File { spec });
        Ok(())
    }

    fn add(&mut self, parent: u64, name: &str, node: Node) -> u64 {
        self.nodes.push(node);
        let ino = self.nodes.len() as u64;
        if let Some(Node::Dir { children, .. }) = self.nodes.get_mut(parent as usize - 1) {
            children.insert(name.to_owned(), ino);
        }
        ino
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        match self.get(parent)? {
            Node::Dir { children, .. } => children.get(name).copied(),
            Node::File { .. } => None,
        }
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(self.get(ino), Some(Node::Dir { .. }))
    }

    /// Every file's inode, for the cache.
    pub fn files(&self) -> impl Iterator<Item = (u64, &FileSpec)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| match node {
                Node::File { spec, .. } => Some((i as u64 + 1, spec)),
                Node::Dir { .. } => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> FileSpec {
        FileSpec {
            path: path.into(),
            item: "id".into(),
            mode: 0o400,
            uid: 0,
            gid: 0,
            ttl: Duration::from_secs(1),
            allow_uids: vec![],
            allow_gids: vec![],
        }
    }

    #[test]
    fn nested_names_make_directories() {
        let tree = Tree::build(vec![
            spec("borg/passphrase"),
            spec("borg/ssh/key"),
            spec("top"),
        ])
        .unwrap();
        let borg = tree.child(ROOT, "borg").unwrap();
        let ssh = tree.child(borg, "ssh").unwrap();
        assert!(matches!(
            tree.get(tree.child(ssh, "key").unwrap()),
            Some(Node::File { .. })
        ));
        assert!(tree.child(ROOT, "top").is_some());
        assert_eq!(tree.files().count(), 3);
    }

    #[test]
    fn bad_names_are_refused() {
        for names in [
            vec!["a//b"],
            vec!["../x"],
            vec!["a", "a"],
            vec!["a", "a/b"],
            vec!["a/b", "a"],
        ] {
            let specs = names.into_iter().map(spec).collect();
            assert!(Tree::build(specs).is_err());
        }
    }
}
