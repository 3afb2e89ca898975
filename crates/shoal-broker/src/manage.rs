//! Runtime changes of users, vhosts and permissions, as RabbitMQ makes
//! them: each is checked (limits, names, patterns, the configuration
//! file's entries being fixed), written to `DATA/accounts.json` first, then
//! put in force. Deleting a user or a vhost closes its AMQP connections
//! with 320 CONNECTION_FORCED; deleting a vhost also deletes its queues,
//! messages and permissions.

use crate::accounts::{
    check_name, compile, store_path, Patterns, Runtime, Secret, StoredUser, MAX_PERMISSIONS,
    MAX_USERS, MAX_VHOSTS,
};
use crate::server::{open_vhost, vhost_dir, vhost_dir_name, Broker};
use parking_lot::Mutex;
use std::sync::Arc;

/// Why a change was refused.
#[derive(Debug)]
pub enum Refused {
    /// 400: invalid, beyond a limit, or fixed by the configuration file.
    Invalid(String),
    /// 404: the user, vhost or permission does not exist.
    NotFound(String),
    /// 500: the store could not be written (nothing changed).
    Store(String),
}

type Res<T> = Result<T, Refused>;

fn fixed(what: String) -> Refused {
    Refused::Invalid(format!(
        "{what} is defined in the broker's configuration file: change it there (reloaded on SIGHUP)"
    ))
}

/// A user for [`Broker::import_accounts`]: name, password, tags.
pub type NewUser<'a> = (&'a str, Secret, Vec<String>);

/// A permission for [`Broker::import_accounts`]: user, vhost, patterns.
pub type NewPermission<'a> = (&'a str, &'a str, [&'a str; 3]);

impl Broker {
    /// Apply `change` to a copy of the runtime accounts, store the copy,
    /// then put it in force. Returns `change`'s value. On a refusal
    /// nothing changes (a vhost it opened is forgotten again).
    fn change_runtime<T>(&self, change: impl FnOnce(&mut Runtime) -> Res<T>) -> Res<T> {
        let mut cur = self.runtime.lock();
        let mut next = cur.clone();
        let stored = change(&mut next).and_then(|out| {
            if next != *cur {
                let path = store_path(&self.config.data_dir);
                next.save(&path).map_err(|e| {
                    tracing::error!(path = %path.display(), error = %e, "cannot save users, vhosts and permissions");
                    Refused::Store(format!("cannot write {}: {e}", path.display()))
                })?;
            }
            Ok(out)
        });
        match stored {
            Ok(out) => {
                if next != *cur {
                    *cur = next;
                    self.rebuild_accounts(&cur);
                }
                Ok(out)
            }
            Err(e) => {
                let keep = |v: &String| self.config.vhosts.contains(v) || cur.vhosts.contains(v);
                self.update_vhosts(|m| m.retain(|v, _| keep(v)));
                Err(e)
            }
        }
    }

    fn user_in(
        &self,
        r: &mut Runtime,
        name: &str,
        secret: &Secret,
        tags: Vec<String>,
    ) -> Res<bool> {
        check_name("user", name).map_err(Refused::Invalid)?;
        let file = self.file_accounts();
        if file.users.contains_key(name) {
            return Err(fixed(format!("user '{name}'")));
        }
        let (password_hash, algo) = secret.export(name);
        let created = !r.users.contains_key(name);
        if created && file.users.len() + r.users.len() >= MAX_USERS {
            return Err(Refused::Invalid(format!(
                "the broker has {MAX_USERS} users, its limit"
            )));
        }
        let user = StoredUser {
            password_hash,
            hashing_algorithm: algo.to_string(),
            tags,
        };
        r.users.insert(name.to_string(), user);
        Ok(created)
    }

    fn vhost_in(&self, r: &mut Runtime, name: &str) -> Res<bool> {
        check_name("vhost", name).map_err(Refused::Invalid)?;
        let vhosts = self.vhosts();
        if vhosts.contains_key(name) {
            return Ok(false);
        }
        if vhosts.len() >= MAX_VHOSTS {
            return Err(Refused::Invalid(format!(
                "the broker has {MAX_VHOSTS} vhosts, its limit"
            )));
        }
        let dir = vhost_dir_name(name);
        if let Some(other) = vhosts.keys().find(|v| vhost_dir_name(v) == dir) {
            return Err(Refused::Invalid(format!(
                "vhost '{name}' would share the data directory {dir} with vhost '{other}' \
                 (names that differ only in characters other than letters, digits, '-' and '_')"
            )));
        }
        let v = open_vhost(&self.config, name)
            .map_err(|e| Refused::Store(format!("cannot open vhost '{name}': {e}")))?;
        r.vhosts.push(name.to_string());
        self.update_vhosts(|m| {
            m.insert(name.to_string(), Arc::new(Mutex::new(v)));
        });
        Ok(true)
    }

    fn permission_in(
        &self,
        r: &mut Runtime,
        user: &str,
        vhost: &str,
        pats: [&str; 3],
    ) -> Res<bool> {
        let [configure, write, read] = pats;
        compile(configure, write, read).map_err(Refused::Invalid)?;
        let file = self.file_accounts();
        // RabbitMQ answers 400 `vhost_or_user_not_found` here.
        if !file.users.contains_key(user) && !r.users.contains_key(user) {
            return Err(Refused::Invalid(format!(
                "vhost_or_user_not_found: no user '{user}'"
            )));
        }
        if self.vhost(vhost).is_none() {
            return Err(Refused::Invalid(format!(
                "vhost_or_user_not_found: no vhost '{vhost}'"
            )));
        }
        if file
            .permissions
            .contains_key(&(user.to_string(), vhost.to_string()))
        {
            return Err(fixed(format!(
                "the permissions of user '{user}' in vhost '{vhost}'"
            )));
        }
        let created = !r
            .permissions
            .get(user)
            .is_some_and(|m| m.contains_key(vhost));
        if created && r.permission_count() >= MAX_PERMISSIONS {
            return Err(Refused::Invalid(format!(
                "the broker has {MAX_PERMISSIONS} permission entries, its limit"
            )));
        }
        let p = Patterns {
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        };
        r.permissions
            .entry(user.to_string())
            .or_default()
            .insert(vhost.to_string(), p);
        Ok(created)
    }

    /// Create or update user `name`; `Ok(true)` when created.
    pub fn put_user(&self, name: &str, secret: &Secret, tags: Vec<String>) -> Res<bool> {
        self.change_runtime(|r| self.user_in(r, name, secret, tags))
    }

    /// Delete user `name` and its permissions; its connections are closed.
    pub fn delete_user(&self, name: &str) -> Res<()> {
        if self.file_accounts().users.contains_key(name) {
            return Err(fixed(format!("user '{name}'")));
        }
        self.change_runtime(|r| {
            if r.users.remove(name).is_none() {
                return Err(Refused::NotFound(format!("no user '{name}'")));
            }
            r.permissions.remove(name);
            Ok(())
        })?;
        let n = self.force_close(|c| c.user == name, &format!("user '{name}' is deleted"));
        tracing::info!(user = %name, closed_connections = n, "user deleted");
        Ok(())
    }

    /// Create vhost `name`; `Ok(false)` when it exists already.
    pub fn put_vhost(&self, name: &str) -> Res<bool> {
        self.change_runtime(|r| self.vhost_in(r, name))
    }

    /// Delete vhost `name` with its queues, messages and permissions; its
    /// connections are closed.
    pub fn delete_vhost(&self, name: &str) -> Res<()> {
        if self.config.vhosts.iter().any(|v| v == name) {
            return Err(fixed(format!("vhost '{name}'")));
        }
        let mut gone = None;
        self.change_runtime(|r| {
            let before = r.vhosts.len();
            r.vhosts.retain(|v| v != name);
            if r.vhosts.len() == before {
                return Err(Refused::NotFound(format!("no vhost '{name}'")));
            }
            for m in r.permissions.values_mut() {
                m.remove(name);
            }
            r.permissions.retain(|_, m| !m.is_empty());
            Ok(())
        })?;
        self.update_vhosts(|m| gone = m.remove(name));
        let n = self.force_close(|c| c.vhost == name, &format!("vhost '{name}' is deleted"));
        if let Some(v) = gone {
            let mut g = v.lock();
            let (queues, messages) = (
                g.queues.len(),
                g.queues.values().map(|q| q.len).sum::<usize>(),
            );
            // Definitions are no longer saved; the memory goes with the
            // last connection's reference.
            g.deleted = true;
            // Pending writes finish and the syncer stops before the files go.
            g.store.close();
            let dir = vhost_dir(&self.config, name);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted vhost's directory");
            }
            tracing::info!(vhost = %name, queues, messages, closed_connections = n, "vhost deleted");
        }
        Ok(())
    }

    /// Set `user`'s permissions in `vhost`; `Ok(true)` when created.
    pub fn set_permission(&self, user: &str, vhost: &str, patterns: [&str; 3]) -> Res<bool> {
        self.change_runtime(|r| self.permission_in(r, user, vhost, patterns))
    }

    /// Remove `user`'s permissions in `vhost`.
    pub fn clear_permission(&self, user: &str, vhost: &str) -> Res<()> {
        let key = (user.to_string(), vhost.to_string());
        if self.file_accounts().permissions.contains_key(&key) {
            return Err(fixed(format!(
                "the permissions of user '{user}' in vhost '{vhost}'"
            )));
        }
        self.change_runtime(|r| {
            let gone = r.permissions.get_mut(user).and_then(|m| m.remove(vhost));
            if gone.is_none() {
                return Err(Refused::NotFound(format!(
                    "no permissions for user '{user}' in vhost '{vhost}'"
                )));
            }
            r.permissions.retain(|_, m| !m.is_empty());
            Ok(())
        })
    }

    /// A definitions import's users, vhosts and permissions, as one change:
    /// stored once, all or nothing.
    pub fn import_accounts(
        &self,
        users: Vec<NewUser>,
        vhosts: &[&str],
        permissions: &[NewPermission],
    ) -> Res<()> {
        self.change_runtime(|r| {
            for (name, secret, tags) in users {
                self.user_in(r, name, &secret, tags)?;
            }
            for v in vhosts {
                self.vhost_in(r, v)?;
            }
            for (user, vhost, pats) in permissions {
                self.permission_in(r, user, vhost, *pats)?;
            }
            Ok(())
        })
    }
}
