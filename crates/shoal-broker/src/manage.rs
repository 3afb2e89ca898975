//! Runtime changes of users, vhosts and permissions, as RabbitMQ makes
//! them: each is checked (limits, names, patterns, the configuration
//! file's entries being fixed), written to `DATA/accounts.json` first, then
//! put in force. Deleting a user or a vhost closes its AMQP connections
//! with 320 CONNECTION_FORCED; deleting a vhost also deletes its queues,
//! messages and permissions.

use crate::accounts::{
    check_name, compile, store_path, Runtime, Secret, StoredPermission, StoredUser,
    MAX_PERMISSIONS, MAX_USERS, MAX_VHOSTS,
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

impl Broker {
    /// Apply `change` to a copy of the runtime accounts, store the copy,
    /// then put it in force. Returns `change`'s value.
    fn change_runtime<T>(&self, change: impl FnOnce(&mut Runtime) -> Res<T>) -> Res<T> {
        let mut cur = self.runtime.lock();
        let mut next = cur.clone();
        let out = change(&mut next)?;
        if next != *cur {
            let path = store_path(&self.config.data_dir);
            next.save(&path).map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "cannot save users, vhosts and permissions");
                Refused::Store(format!("cannot write {}: {e}", path.display()))
            })?;
            *cur = next;
            self.rebuild_accounts(&cur);
        }
        Ok(out)
    }

    /// Create or update user `name`; `Ok(true)` when created.
    pub fn put_user(&self, name: &str, secret: &Secret, tags: Vec<String>) -> Res<bool> {
        check_name("user", name).map_err(Refused::Invalid)?;
        if self.file_accounts().users.contains_key(name) {
            return Err(fixed(format!("user '{name}'")));
        }
        let (password_hash, algo) = secret.export(name);
        let user = StoredUser {
            password_hash,
            hashing_algorithm: algo.to_string(),
            tags,
        };
        let file_users = self.file_accounts().users.len();
        self.change_runtime(|r| {
            let created = !r.users.contains_key(name);
            if created && file_users + r.users.len() >= MAX_USERS {
                return Err(Refused::Invalid(format!(
                    "the broker has {MAX_USERS} users, its limit"
                )));
            }
            r.users.insert(name.to_string(), user);
            Ok(created)
        })
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
            r.permissions.retain(|p| p.user != name);
            Ok(())
        })?;
        let n = self.force_close(|c| c.user == name, &format!("user '{name}' is deleted"));
        tracing::info!(user = %name, closed_connections = n, "user deleted");
        Ok(())
    }

    /// Create vhost `name`; `Ok(false)` when it exists already.
    pub fn put_vhost(&self, name: &str) -> Res<bool> {
        check_name("vhost", name).map_err(Refused::Invalid)?;
        if self.vhost(name).is_some() {
            return Ok(false);
        }
        let vhosts = self.vhosts();
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
        // The map is changed under the runtime lock, so two requests for
        // the same name create it once.
        self.change_runtime(|r| {
            if self.vhost(name).is_some() {
                return Ok(false);
            }
            let v = open_vhost(&self.config, name)
                .map_err(|e| Refused::Store(format!("cannot open vhost '{name}': {e}")))?;
            r.vhosts.push(name.to_string());
            self.update_vhosts(|m| {
                m.insert(name.to_string(), Arc::new(Mutex::new(v)));
            });
            Ok(true)
        })
        .inspect_err(|_| {
            // Not stored: forget it again.
            if !self.runtime.lock().vhosts.iter().any(|v| v == name) {
                self.update_vhosts(|m| {
                    m.remove(name);
                });
            }
        })
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
            r.permissions.retain(|p| p.vhost != name);
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
    pub fn set_permission(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Res<bool> {
        compile(configure, write, read).map_err(Refused::Invalid)?;
        // RabbitMQ answers 400 `vhost_or_user_not_found` here.
        if !self.accounts().users.contains_key(user) {
            return Err(Refused::Invalid(format!(
                "vhost_or_user_not_found: no user '{user}'"
            )));
        }
        if self.vhost(vhost).is_none() {
            return Err(Refused::Invalid(format!(
                "vhost_or_user_not_found: no vhost '{vhost}'"
            )));
        }
        let key = (user.to_string(), vhost.to_string());
        if self.file_accounts().permissions.contains_key(&key) {
            return Err(fixed(format!(
                "the permissions of user '{user}' in vhost '{vhost}'"
            )));
        }
        let p = StoredPermission {
            user: user.into(),
            vhost: vhost.into(),
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        };
        self.change_runtime(|r| {
            let full = r.permissions.len() >= MAX_PERMISSIONS;
            match r
                .permissions
                .iter_mut()
                .find(|x| x.user == user && x.vhost == vhost)
            {
                Some(x) => {
                    *x = p;
                    Ok(false)
                }
                None if full => Err(Refused::Invalid(format!(
                    "the broker has {MAX_PERMISSIONS} permission entries, its limit"
                ))),
                None => {
                    r.permissions.push(p);
                    Ok(true)
                }
            }
        })
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
            let before = r.permissions.len();
            r.permissions
                .retain(|p| !(p.user == user && p.vhost == vhost));
            if r.permissions.len() == before {
                return Err(Refused::NotFound(format!(
                    "no permissions for user '{user}' in vhost '{vhost}'"
                )));
            }
            Ok(())
        })
    }
}
