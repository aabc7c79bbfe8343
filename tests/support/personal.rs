//! An [`Archive`] that keeps what it is given in memory, for tests of the modules'
//! `PersonalData`.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use serde_json::Value;

use companion::platform::personal::{Archive, FileStream, ItemStream};

#[derive(Default)]
pub struct Kept {
    pub takes_files: bool,
    pub json: HashMap<String, Value>,
    pub files: HashMap<String, Vec<u8>>,
}

impl Archive for Kept {
    fn json<'a>(&'a mut self, path: &'a str, value: Value) -> BoxFuture<'a, anyhow::Result<()>> {
        self.json.insert(path.to_owned(), value);
        Box::pin(async { Ok(()) })
    }

    fn json_array<'a>(
        &'a mut self,
        path: &'a str,
        mut head: Value,
        key: &'a str,
        items: ItemStream<'a>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let items: Vec<Box<serde_json::value::RawValue>> = items.try_collect().await?;
            let items = items
                .iter()
                .map(|item| serde_json::from_str(item.get()))
                .collect::<Result<Vec<Value>, _>>()?;
            head[key] = Value::Array(items);
            self.json.insert(path.to_owned(), head);
            Ok(())
        })
    }

    fn takes_files(&self) -> bool {
        self.takes_files
    }

    fn file<'a>(
        &'a mut self,
        path: &'a str,
        bytes: FileStream,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let chunks: Vec<bytes::Bytes> = bytes.try_collect().await?;
            self.files.insert(path.to_owned(), chunks.concat());
            Ok(())
        })
    }
}
