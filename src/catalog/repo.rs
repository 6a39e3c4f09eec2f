//! Catalog queries. The only place that touches the catalog's sea-orm entities.

use std::collections::HashMap;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, Statement, TransactionTrait,
};
use time::OffsetDateTime;

use super::entity::{catalog_state, category, product, product_image, variant};
use super::model::{Category, Currency, Image, Money, Product, StockState, Variant};
use super::read_model::CatalogStamp;

/// The most search hits kept for one query; shoppers never page further.
const SEARCH_LIMIT: u32 = 500;

/// The catalog version and the latest stock change, read together.
pub async fn current_stamp<C: ConnectionTrait>(db: &C) -> Result<CatalogStamp, DbErr> {
    use sea_orm::QuerySelect;
    let version = catalog_state::Entity::find_by_id(1)
        .one(db)
        .await?
        .map(|row| row.version)
        .unwrap_or(0);
    let stock_changed_at: Option<OffsetDateTime> = variant::Entity::find()
        .select_only()
        .column_as(variant::Column::UpdatedAt.max(), "latest")
        .into_tuple()
        .one(db)
        .await?
        .flatten();
    Ok(CatalogStamp {
        version,
        stock_changed_at,
    })
}

/// Bumps the catalog version inside the caller's transaction, so replicas
/// reload exactly when the change commits.
pub async fn bump_version<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    use sea_orm::sea_query::ExprTrait;
    catalog_state::Entity::update_many()
        .col_expr(
            catalog_state::Column::Version,
            Expr::col(catalog_state::Column::Version).add(1),
        )
        .col_expr(
            catalog_state::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(catalog_state::Column::Id.eq(1))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn product_count(db: &DatabaseConnection) -> Result<u64, DbErr> {
    product::Entity::find().count(db).await
}

/// Everything the read model needs, read in one transaction so the version
/// matches the rows.
pub async fn load_catalog(
    db: &DatabaseConnection,
    low_stock_threshold: i32,
) -> Result<(CatalogStamp, Vec<Category>, Vec<Product>), DbErr> {
    let txn = db.begin().await?;
    let stamp = current_stamp(&txn).await?;
    let categories = category::Entity::find()
        .order_by_asc(category::Column::Position)
        .order_by_asc(category::Column::Id)
        .all(&txn)
        .await?;
    let products = product::Entity::find()
        .filter(product::Column::Status.eq("active"))
        .order_by_asc(product::Column::Id)
        .all(&txn)
        .await?;
    let variants = variant::Entity::find()
        .order_by_asc(variant::Column::ProductId)
        .order_by_asc(variant::Column::Position)
        .order_by_asc(variant::Column::Id)
        .all(&txn)
        .await?;
    let images = product_image::Entity::find()
        .order_by_asc(product_image::Column::ProductId)
        .order_by_asc(product_image::Column::Position)
        .all(&txn)
        .await?;
    txn.commit().await?;

    let mut variants_by_product: HashMap<i64, Vec<Variant>> = HashMap::new();
    for row in variants {
        let Some(currency) = Currency::parse(&row.currency) else {
            tracing::warn!(sku = %row.sku, currency = %row.currency, "variant with unknown currency skipped");
            continue;
        };
        let available = row.stock_on_hand - row.reserved;
        variants_by_product
            .entry(row.product_id)
            .or_default()
            .push(Variant {
                id: row.id,
                sku: row.sku,
                title: row.title,
                size: row.size,
                colour: row.colour,
                price: Money::new(row.price_minor, currency),
                available,
                stock: StockState::from_available(available, low_stock_threshold),
            });
    }
    let mut images_by_product: HashMap<i64, Vec<Image>> = HashMap::new();
    for row in images {
        images_by_product
            .entry(row.product_id)
            .or_default()
            .push(Image {
                url: row.url,
                alt: row.alt,
            });
    }
    let category_names: HashMap<i64, (&str, &str)> = categories
        .iter()
        .map(|c| (c.id, (c.slug.as_str(), c.name.as_str())))
        .collect();

    let mut out = Vec::with_capacity(products.len());
    for row in products {
        let variants = variants_by_product.remove(&row.id).unwrap_or_default();
        // A product nobody can buy in any variant is not shown.
        let (Some(min), Some(max)) = (
            variants.iter().map(|v| v.price).min(),
            variants.iter().map(|v| v.price).max(),
        ) else {
            continue;
        };
        let Some((category_slug, category_name)) = category_names.get(&row.category_id) else {
            continue;
        };
        let stock = StockState::of_variants(&variants, low_stock_threshold);
        out.push(Product {
            id: row.id,
            slug: row.slug,
            name: row.name,
            description: row.description,
            tags: row
                .tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            featured: row.featured,
            category_id: row.category_id,
            category_slug: category_slug.to_string(),
            category_name: category_name.to_string(),
            created_at: row.created_at,
            variants,
            images: images_by_product.remove(&row.id).unwrap_or_default(),
            min_price: min,
            max_price: max,
            stock,
        });
    }
    let categories = categories
        .into_iter()
        .map(|c| Category {
            id: c.id,
            slug: c.slug,
            name: c.name,
            description: c.description,
            product_count: 0,
        })
        .collect();
    Ok((stamp, categories, out))
}

/// How the words of a search combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Every word must appear (as a word prefix).
    All,
    /// Any word may appear; more matches rank higher.
    Any,
}

/// Ids of active products matching the terms, best first, using SQLite FTS5
/// or PostgreSQL full-text search. Terms must already be normalised to
/// letters and digits (see `SearchTerms`).
pub async fn search_product_ids(
    db: &DatabaseConnection,
    terms: &[String],
    mode: Match,
) -> Result<Vec<i64>, DbErr> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let statement = match backend {
        DbBackend::Sqlite => {
            let joiner = if mode == Match::All { " AND " } else { " OR " };
            let expression = terms
                .iter()
                .map(|t| format!("\"{t}\"*"))
                .collect::<Vec<_>>()
                .join(joiner);
            Statement::from_sql_and_values(
                backend,
                "SELECT p.id FROM products_fts f JOIN products p ON p.id = f.rowid \
                 WHERE products_fts MATCH $1 AND p.status = 'active' \
                 ORDER BY bm25(products_fts, 10.0, 4.0, 1.0), p.id LIMIT $2",
                [expression.into(), SEARCH_LIMIT.into()],
            )
        }
        DbBackend::Postgres => {
            let joiner = if mode == Match::All { " & " } else { " | " };
            let expression = terms
                .iter()
                .map(|t| format!("{t}:*"))
                .collect::<Vec<_>>()
                .join(joiner);
            Statement::from_sql_and_values(
                backend,
                "SELECT id FROM products, to_tsquery('english', $1) query \
                 WHERE status = 'active' AND search_vector @@ query \
                 ORDER BY ts_rank(search_vector, query) DESC, id LIMIT $2",
                [expression.into(), (SEARCH_LIMIT as i64).into()],
            )
        }
        other => {
            return Err(DbErr::Custom(format!(
                "search is not supported on {other:?}"
            )));
        }
    };
    let rows = db.query_all_raw(statement).await?;
    rows.iter()
        .map(|row| row.try_get_by_index::<i64>(0))
        .collect::<Result<Vec<_>, _>>()
}

/// A category to insert, with its products.
pub struct NewCategory {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub position: i32,
    pub products: Vec<NewProduct>,
}

pub struct NewProduct {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub tags: String,
    pub featured: bool,
    pub created_at: OffsetDateTime,
    pub variants: Vec<NewVariant>,
    pub image_url: String,
}

pub struct NewVariant {
    pub sku: String,
    pub title: String,
    pub size: Option<String>,
    pub colour: Option<String>,
    pub price_minor: i64,
    pub currency: &'static str,
    pub stock_on_hand: i32,
}

/// Inserts categories with their products, variants and images in one
/// transaction and bumps the catalog version. Returns the products inserted.
pub async fn insert_catalog(
    db: &DatabaseConnection,
    categories: Vec<NewCategory>,
) -> Result<usize, DbErr> {
    use sea_orm::ActiveValue::{NotSet, Set};

    let txn = db.begin().await?;
    let now = OffsetDateTime::now_utc();
    let mut inserted = 0;
    for new_category in categories {
        let category_id = category::Entity::insert(category::ActiveModel {
            id: NotSet,
            slug: Set(new_category.slug),
            name: Set(new_category.name),
            description: Set(new_category.description),
            position: Set(new_category.position),
            created_at: Set(now),
        })
        .exec(&txn)
        .await?
        .last_insert_id;

        for new_product in new_category.products {
            let product_id = product::Entity::insert(product::ActiveModel {
                id: NotSet,
                category_id: Set(category_id),
                slug: Set(new_product.slug),
                name: Set(new_product.name.clone()),
                description: Set(new_product.description),
                tags: Set(new_product.tags),
                featured: Set(new_product.featured),
                status: Set("active".to_string()),
                created_at: Set(new_product.created_at),
                updated_at: Set(new_product.created_at),
            })
            .exec(&txn)
            .await?
            .last_insert_id;

            let variants = new_product
                .variants
                .into_iter()
                .enumerate()
                .map(|(position, v)| variant::ActiveModel {
                    id: NotSet,
                    product_id: Set(product_id),
                    sku: Set(v.sku),
                    title: Set(v.title),
                    size: Set(v.size),
                    colour: Set(v.colour),
                    price_minor: Set(v.price_minor),
                    currency: Set(v.currency.to_string()),
                    stock_on_hand: Set(v.stock_on_hand),
                    reserved: Set(0),
                    position: Set(position as i32),
                    created_at: Set(now),
                    updated_at: Set(now),
                });
            variant::Entity::insert_many(variants).exec(&txn).await?;
            product_image::Entity::insert(product_image::ActiveModel {
                id: NotSet,
                product_id: Set(product_id),
                url: Set(new_product.image_url),
                alt: Set(new_product.name),
                position: Set(0),
            })
            .exec(&txn)
            .await?;
            inserted += 1;
        }
    }
    bump_version(&txn).await?;
    txn.commit().await?;
    Ok(inserted)
}

/// Sets a variant's stock on hand and bumps the version (used by operators
/// and tests until the admin's stock ledger exists).
pub async fn set_stock(
    db: &DatabaseConnection,
    sku: &str,
    stock_on_hand: i32,
) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    let result = variant::Entity::update_many()
        .col_expr(variant::Column::StockOnHand, Expr::value(stock_on_hand))
        .col_expr(
            variant::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(variant::Column::Sku.eq(sku))
        .exec(&txn)
        .await?;
    if result.rows_affected > 0 {
        bump_version(&txn).await?;
    }
    txn.commit().await?;
    Ok(result.rows_affected > 0)
}

/// A variant as checkout prices it: read from the database, never from the
/// shopper's form or the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantForSale {
    pub id: i64,
    pub product_name: String,
    pub title: String,
    pub sku: String,
    pub price_minor: i64,
    pub currency: String,
    pub available: i32,
}

/// The category slug of each variant among `ids` (archived products too),
/// for order events and analytics.
pub async fn variant_categories<C: ConnectionTrait>(
    db: &C,
    ids: &[i64],
) -> Result<HashMap<i64, String>, DbErr> {
    let variants = variant::Entity::find()
        .filter(variant::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    let product_ids: Vec<i64> = variants.iter().map(|v| v.product_id).collect();
    let products: HashMap<i64, i64> = product::Entity::find()
        .filter(product::Column::Id.is_in(product_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p.category_id))
        .collect();
    let categories: HashMap<i64, String> = category::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c.slug))
        .collect();
    Ok(variants
        .into_iter()
        .filter_map(|v| {
            let category = products.get(&v.product_id)?;
            Some((v.id, categories.get(category)?.clone()))
        })
        .collect())
}

/// The active, purchasable variants among `ids`.
pub async fn variants_for_sale<C: ConnectionTrait>(
    db: &C,
    ids: &[i64],
) -> Result<Vec<VariantForSale>, DbErr> {
    let variants = variant::Entity::find()
        .filter(variant::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    let product_ids: Vec<i64> = variants.iter().map(|v| v.product_id).collect();
    let products: HashMap<i64, product::Model> = product::Entity::find()
        .filter(product::Column::Id.is_in(product_ids))
        .filter(product::Column::Status.eq("active"))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    Ok(variants
        .into_iter()
        .filter_map(|v| {
            let product = products.get(&v.product_id)?;
            Some(VariantForSale {
                id: v.id,
                product_name: product.name.clone(),
                title: v.title,
                sku: v.sku,
                price_minor: v.price_minor,
                currency: v.currency,
                available: v.stock_on_hand - v.reserved,
            })
        })
        .collect())
}

/// Runs one conditional stock update; true when the condition held.
async fn stock_update<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    let backend = db.get_database_backend();
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                quantity.into(),
                variant_id.into(),
                OffsetDateTime::now_utc().into(),
            ],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Holds `quantity` units for an unpaid order, if that many are available.
pub async fn reserve_stock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    stock_update(
        db,
        "UPDATE variants SET reserved = reserved + $1, updated_at = $3 \
         WHERE id = $2 AND stock_on_hand - reserved >= $1",
        variant_id,
        quantity,
    )
    .await
}

/// Gives back a reservation (checkout expired or cancelled).
pub async fn release_stock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    stock_update(
        db,
        "UPDATE variants SET reserved = reserved - $1, updated_at = $3 \
         WHERE id = $2 AND reserved >= $1",
        variant_id,
        quantity,
    )
    .await
}

/// Turns a reservation into a sale: the units leave the shelf.
pub async fn take_reserved_stock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    stock_update(
        db,
        "UPDATE variants SET stock_on_hand = stock_on_hand - $1, reserved = reserved - $1, updated_at = $3 \
         WHERE id = $2 AND reserved >= $1 AND stock_on_hand >= $1",
        variant_id,
        quantity,
    )
    .await
}

/// Sells units that were not reserved (a payment that arrived after its
/// reservation was released), only if they are still available.
pub async fn take_unreserved_stock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    stock_update(
        db,
        "UPDATE variants SET stock_on_hand = stock_on_hand - $1, updated_at = $3 \
         WHERE id = $2 AND stock_on_hand - reserved >= $1",
        variant_id,
        quantity,
    )
    .await
}

/// Puts units back on the shelf (a refund with restocking).
pub async fn restock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    stock_update(
        db,
        "UPDATE variants SET stock_on_hand = stock_on_hand + $1, updated_at = $3 WHERE id = $2",
        variant_id,
        quantity,
    )
    .await
}
