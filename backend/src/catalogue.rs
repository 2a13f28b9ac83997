//! The hotel catalogue: ids, names, cities and rooms for sale per night, loaded at start
//! from a CSV file (the one shipped in `backend/data/hotels.csv`, or `HOTEL_CATALOGUE`).

use std::collections::HashMap;
use std::path::Path;

use appkit::wire::Hotel;

/// The shipped catalogue, built into the binary so it runs from any directory.
const SHIPPED: &str = include_str!("../data/hotels.csv");

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{source_name}, record {line}: {message}")]
    Bad {
        source_name: String,
        line: u64,
        message: String,
    },
}

pub struct Catalogue {
    hotels: HashMap<u32, Hotel>,
    ordered: Vec<u32>,
}

impl Catalogue {
    pub fn shipped() -> Result<Self, CatalogueError> {
        Self::parse(SHIPPED, "backend/data/hotels.csv")
    }

    pub fn from_file(path: &Path) -> Result<Self, CatalogueError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CatalogueError::Io(path.display().to_string(), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source_name: &str) -> Result<Self, CatalogueError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let mut hotels = HashMap::new();
        let mut ordered = Vec::new();
        for record in reader.deserialize::<Hotel>() {
            let bad = |line: u64, message: String| CatalogueError::Bad {
                source_name: source_name.to_string(),
                line,
                message,
            };
            let hotel = record
                .map_err(|e| bad(e.position().map_or(0, csv::Position::line), e.to_string()))?;
            if hotel.rooms == 0 {
                return Err(bad(0, format!("hotel {} has no rooms", hotel.id)));
            }
            if hotels.contains_key(&hotel.id) {
                return Err(bad(0, format!("hotel id {} appears twice", hotel.id)));
            }
            ordered.push(hotel.id);
            hotels.insert(hotel.id, hotel);
        }
        if hotels.is_empty() {
            return Err(CatalogueError::Bad {
                source_name: source_name.to_string(),
                line: 0,
                message: "no hotels".into(),
            });
        }
        Ok(Catalogue { hotels, ordered })
    }

    pub fn get(&self, id: u32) -> Option<&Hotel> {
        self.hotels.get(&id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Hotel> {
        self.ordered.iter().filter_map(|id| self.hotels.get(id))
    }

    pub fn len(&self) -> usize {
        self.hotels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hotels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalogue_loads() {
        let c = Catalogue::shipped().unwrap();
        assert_eq!(c.len(), 300);
        assert_eq!(c.get(1).unwrap().rooms, 50);
    }

    #[test]
    fn bad_rows_are_named() {
        let err = Catalogue::parse("id,name,city,rooms\n1,A,B,ten\n", "x.csv")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("x.csv"), "{err}");
    }
}
