//! HTTP tests: each starts the whole app on port 0 with its own database, on SQLite and
//! on PostgreSQL (`on_each_engine!`), and talks to it over real HTTP.

mod accounts;
mod authz;
mod bookings;
mod box_office;
mod box_office_pages;
mod browser;
mod docs;
mod events;
mod hanging;
mod helpers;
mod hostile;
mod lifecycle;
mod limits;
mod live;
mod organizer;
mod payments;
mod performances;
mod plumbing;
mod replicas;
mod smtp;
mod standing;
mod stripe;
mod waiting;
mod web;
