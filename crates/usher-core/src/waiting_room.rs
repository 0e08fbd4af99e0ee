//! The waiting room's admission rule: how many queued buyers the gatekeeper lets in
//! at each step. The draw, the numbering and the admissions themselves are the use case's
//! (`usher_app::waiting_room`); this is the arithmetic it asks.

/// What the gatekeeper weighs for one performance, read in its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleState {
    /// Units free to hold now.
    pub free: u64,
    /// Units in live holds.
    pub held: u64,
    /// Admitted within the admission time who have not held yet.
    pub admitted_not_buying: u64,
    /// Bookings made since the opening and the units they took.
    pub bookings: u64,
    pub booked_units: u64,
    pub max_per_booking: u32,
    /// Scheduled, published and not started.
    pub selling: bool,
}

impl SaleState {
    /// Units one admitted buyer is expected to take: what buyers took on average so far
    /// (once there are ten bookings), else up to four.
    pub fn per_buyer(&self) -> u64 {
        if self.bookings >= 10 {
            self.booked_units.div_ceil(self.bookings).max(1)
        } else {
            u64::from(self.max_per_booking.min(4)).max(1)
        }
    }

    /// How many more to admit: enough for what is left to sell (free units minus what
    /// admitted buyers are about to take), at least one while anything is free.
    pub fn to_admit(&self, max_per_step: u32) -> u64 {
        if !self.selling || self.free == 0 {
            return 0;
        }
        let per = self.per_buyer();
        let spoken_for = self.admitted_not_buying * per;
        let left = self.free.saturating_sub(spoken_for);
        let admit = left / per;
        let admit = if admit == 0 && self.admitted_not_buying == 0 {
            1
        } else {
            admit
        };
        admit.min(u64::from(max_per_step))
    }

    /// Nothing left to wait for: nothing free and nothing held that could come back
    /// (or the sale is over).
    pub fn sold_out(&self) -> bool {
        !self.selling || (self.free == 0 && self.held == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(free: u64, admitted_not_buying: u64) -> SaleState {
        SaleState {
            free,
            held: 0,
            admitted_not_buying,
            bookings: 0,
            booked_units: 0,
            max_per_booking: 10,
            selling: true,
        }
    }

    #[test]
    fn admission_follows_what_is_left_to_sell() {
        // 100 free, nobody admitted: 25 buyers of up to four.
        assert_eq!(sale(100, 0).to_admit(1_000), 25);
        // 20 admitted buyers are about to take 80: room for five more.
        assert_eq!(sale(100, 20).to_admit(1_000), 5);
        // Enough admitted for everything: nobody more.
        assert_eq!(sale(100, 30).to_admit(1_000), 0);
        // The last unit still admits someone when nobody is about to buy.
        assert_eq!(sale(1, 0).to_admit(1_000), 1);
        assert_eq!(sale(0, 0).to_admit(1_000), 0);
        assert_eq!(sale(10_000, 0).to_admit(100), 100);
        let seen = SaleState {
            bookings: 40,
            booked_units: 70,
            ..sale(100, 0)
        };
        assert_eq!(seen.per_buyer(), 2);
        assert_eq!(seen.to_admit(1_000), 50);
    }

    #[test]
    fn sold_out_means_nothing_free_and_nothing_that_could_come_back() {
        assert!(sale(0, 0).sold_out());
        assert!(
            !SaleState {
                held: 3,
                ..sale(0, 0)
            }
            .sold_out()
        );
        assert!(!sale(1, 0).sold_out());
        assert!(
            SaleState {
                selling: false,
                ..sale(5, 0)
            }
            .sold_out()
        );
    }
}
