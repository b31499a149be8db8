//! Indexes over the configured Pages and users, built once at start so each call is a few hash lookups.

use super::{SimConfig, SimPage, SimUser};
use std::collections::HashMap;
use std::io;

pub(crate) struct Directory {
    pages: Vec<SimPage>,
    page_by_token: HashMap<String, usize>,
    page_by_id: HashMap<String, usize>,
    users: Vec<SimUser>,
    users_by_psid: HashMap<String, Vec<usize>>,
    users_by_person: HashMap<String, Vec<usize>>,
}

/// How a PSID relates to the Page asking about it.
pub(crate) enum Lookup<'a> {
    Known(&'a SimUser),
    /// Configured, but for another Page: PSIDs are Page-scoped, so this Page cannot see it.
    OtherPage,
    Unknown,
}

impl Directory {
    pub fn build(cfg: &SimConfig) -> io::Result<Directory> {
        let mut dir = Directory {
            pages: cfg.pages.clone(),
            page_by_token: HashMap::new(),
            page_by_id: HashMap::new(),
            users: cfg.users.clone(),
            users_by_psid: HashMap::new(),
            users_by_person: HashMap::new(),
        };
        dir.index_pages()?;
        dir.index_users()?;
        Ok(dir)
    }

    fn index_pages(&mut self) -> io::Result<()> {
        for (i, page) in self.pages.iter().enumerate() {
            if self
                .page_by_token
                .insert(page.access_token.clone(), i)
                .is_some()
            {
                return Err(invalid(format!(
                    "two pages share the access token of page {}",
                    page.id
                )));
            }
            if self.page_by_id.insert(page.id.clone(), i).is_some() {
                return Err(invalid(format!("page {} is configured twice", page.id)));
            }
        }
        Ok(())
    }

    fn index_users(&mut self) -> io::Result<()> {
        for (i, user) in self.users.iter().enumerate() {
            if !self.page_by_id.contains_key(&user.page_id) {
                return Err(invalid(format!(
                    "user {} belongs to unknown page {}",
                    user.psid, user.page_id
                )));
            }
            let same_psid = self.users_by_psid.entry(user.psid.clone()).or_default();
            if same_psid
                .iter()
                .any(|&j| self.users[j].page_id == user.page_id)
            {
                return Err(invalid(format!(
                    "psid {} is configured twice for page {}",
                    user.psid, user.page_id
                )));
            }
            same_psid.push(i);
            self.users_by_person
                .entry(person_key(user))
                .or_default()
                .push(i);
        }
        Ok(())
    }

    pub fn page_by_token(&self, token: &str) -> Option<&SimPage> {
        self.page_by_token.get(token).map(|&i| &self.pages[i])
    }

    pub fn page(&self, id: &str) -> Option<&SimPage> {
        self.page_by_id.get(id).map(|&i| &self.pages[i])
    }

    pub fn lookup(&self, page_id: &str, psid: &str) -> Lookup<'_> {
        let Some(candidates) = self.users_by_psid.get(psid) else {
            return Lookup::Unknown;
        };
        candidates
            .iter()
            .map(|&i| &self.users[i])
            .find(|u| u.page_id == page_id)
            .map_or(Lookup::OtherPage, Lookup::Known)
    }

    /// The same person's users on the other Pages, in configuration order.
    pub fn same_person_elsewhere(&self, user: &SimUser) -> Vec<&SimUser> {
        self.users_by_person
            .get(&person_key(user))
            .into_iter()
            .flatten()
            .map(|&i| &self.users[i])
            .filter(|u| u.page_id != user.page_id)
            .collect()
    }
}

/// An empty `person` makes the user a person of their own; the NUL keeps that key apart from named persons.
fn person_key(user: &SimUser) -> String {
    if user.person.is_empty() {
        format!("\0{}", user.psid)
    } else {
        user.person.clone()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
