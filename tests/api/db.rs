//! `platform::db::Batch` on both databases: each statement's rows come back
//! to it, parameters land in the statement they belong to, the groups
//! commit together, and a failed or abandoned batch leaves nothing behind,
//! neither rows nor a half-open transaction on a pooled connection.

use kedai::platform::messaging::entity::contact;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Statement};
use time::OffsetDateTime;

use crate::helpers::TestApp;

crate::on_both_databases!(
    rows_come_back_per_statement_and_the_groups_commit_together,
    a_failing_statement_rolls_the_whole_batch_back,
    a_batch_dropped_before_its_commit_writes_nothing,
);

/// Inserts these phones as contacts, returning each phone inserted.
fn insert_contacts(app: &TestApp, phones: &[&str]) -> Statement {
    let now = OffsetDateTime::now_utc();
    let mut insert = Query::insert();
    insert
        .into_table(contact::Entity)
        .columns([contact::Column::Phone, contact::Column::UpdatedAt])
        .returning(Query::returning().column(contact::Column::Phone));
    for phone in phones {
        insert.values_panic([(*phone).into(), now.into()]);
    }
    app.context.db.get_database_backend().build(&insert)
}

/// Marks one contact opted out (no rows back).
fn opt_out(app: &TestApp, phone: &str) -> Statement {
    let update = Query::update()
        .table(contact::Entity)
        .value(contact::Column::OptedOutAt, OffsetDateTime::now_utc())
        .and_where(contact::Column::Phone.eq(phone))
        .to_owned();
    app.context.db.get_database_backend().build(&update)
}

/// The contacts whose phone starts with `prefix`, as rows of `phone`.
fn phones_like(app: &TestApp, prefix: &str) -> Statement {
    let select = Query::select()
        .column(contact::Column::Phone)
        .from(contact::Entity)
        .and_where(contact::Column::Phone.like(format!("{prefix}%")))
        .order_by(contact::Column::Phone, sea_orm::Order::Asc)
        .to_owned();
    app.context.db.get_database_backend().build(&select)
}

fn phones(rows: &[sea_orm::QueryResult]) -> Vec<String> {
    rows.iter()
        .map(|row| row.try_get::<String>("", "phone").unwrap())
        .collect()
}

async fn count(app: &TestApp) -> u64 {
    contact::Entity::find()
        .count(&app.context.db)
        .await
        .unwrap()
}

/// Writes one contact through an ordinary transaction on every pooled
/// connection in turn: one left inside an open transaction would refuse
/// to begin another (SQLite) or keep the write from being seen.
async fn pool_still_writes(app: &TestApp, tag: &str) {
    use sea_orm::ActiveValue::Set;
    for i in 0..10 {
        let phone = format!("{tag}-after-{i}");
        let (txn, _permit) = app.context.writer.begin().await.expect("begin");
        contact::Entity::insert(contact::ActiveModel {
            phone: Set(phone.clone()),
            last_inbound_at: Set(None),
            opted_out_at: Set(None),
            updated_at: Set(OffsetDateTime::now_utc()),
        })
        .exec_without_returning(&txn)
        .await
        .expect("insert after the batch");
        txn.commit().await.expect("commit after the batch");
        let found = contact::Entity::find_by_id(phone.clone())
            .one(&app.context.db)
            .await
            .unwrap();
        assert!(found.is_some(), "{phone} is visible once committed");
    }
}

async fn rows_come_back_per_statement_and_the_groups_commit_together(app: TestApp) {
    let mut batch = app.context.writer.batch().await.unwrap();
    let first = batch
        .run(&[
            insert_contacts(&app, &["+601-a", "+601-b"]),
            opt_out(&app, "+601-a"),
            insert_contacts(&app, &["+601-c"]),
        ])
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(phones(&first[0]), ["+601-a", "+601-b"]);
    assert!(first[1].is_empty(), "an UPDATE returns no rows");
    assert_eq!(phones(&first[2]), ["+601-c"]);

    // Not visible outside the batch before its commit (PostgreSQL reads
    // the last committed state; SQLite in WAL mode too).
    assert_eq!(count(&app).await, 0);

    let last = batch
        .commit(&[
            phones_like(&app, "+601-"),
            insert_contacts(&app, &["+602-d"]),
        ])
        .await
        .unwrap();
    assert_eq!(phones(&last[0]), ["+601-a", "+601-b", "+601-c"]);
    assert_eq!(phones(&last[1]), ["+602-d"]);

    assert_eq!(count(&app).await, 4);
    let opted_out: Vec<String> = contact::Entity::find()
        .filter(contact::Column::OptedOutAt.is_not_null())
        .all(&app.context.db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.phone)
        .collect();
    assert_eq!(opted_out, ["+601-a"], "the update's parameter bound to it");

    // A batch with nothing to run before its commit.
    let only = app.context.writer.batch().await.unwrap();
    let rows = only
        .commit(&[insert_contacts(&app, &["+603-e"])])
        .await
        .unwrap();
    assert_eq!(phones(&rows[0]), ["+603-e"]);
    assert_eq!(count(&app).await, 5);
}

async fn a_failing_statement_rolls_the_whole_batch_back(app: TestApp) {
    let mut batch = app.context.writer.batch().await.unwrap();
    batch
        .run(&[insert_contacts(&app, &["+611-a"])])
        .await
        .unwrap();
    // The same phone again, without ON CONFLICT: a unique violation.
    let error = batch
        .commit(&[
            insert_contacts(&app, &["+611-b"]),
            insert_contacts(&app, &["+611-a"]),
        ])
        .await
        .expect_err("a duplicate key fails the batch");
    assert!(
        error.to_string().to_lowercase().contains("unique")
            || error.to_string().to_lowercase().contains("duplicate"),
        "{error}"
    );
    assert_eq!(count(&app).await, 0, "neither group was kept");

    // A failure inside the first group too.
    let mut batch = app.context.writer.batch().await.unwrap();
    let mut upsert = Query::insert();
    upsert
        .into_table(contact::Entity)
        .columns([contact::Column::Phone, contact::Column::UpdatedAt])
        .values_panic(["+612-a".into(), OffsetDateTime::now_utc().into()])
        .on_conflict(
            OnConflict::column(contact::Column::Phone)
                .do_nothing()
                .to_owned(),
        );
    let upsert = app.context.db.get_database_backend().build(&upsert);
    batch
        .run(&[upsert, insert_contacts(&app, &["+612-a"])])
        .await
        .expect_err("the second insert of +612-a fails");
    drop(batch);
    assert_eq!(count(&app).await, 0);

    pool_still_writes(&app, "failed").await;
}

async fn a_batch_dropped_before_its_commit_writes_nothing(app: TestApp) {
    for _ in 0..3 {
        let mut batch = app.context.writer.batch().await.unwrap();
        batch
            .run(&[insert_contacts(&app, &["+621-a"])])
            .await
            .unwrap();
        drop(batch);
    }
    // Give a connection being closed in the background time to go.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(count(&app).await, 0);
    pool_still_writes(&app, "dropped").await;
    assert_eq!(count(&app).await, 10);
}
