//! The text of the emails identity sends.

use crate::platform::mail::Email;

pub fn verify_address(to: &str, display_name: &str, public_url: &str, token: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "Confirm your email address".to_owned(),
        body: format!(
            "Hello {display_name},\n\n\
             Welcome to Companion. Confirm that this address is yours by opening:\n\n\
             {public_url}/#/verify-email?token={token}\n\n\
             The link works once and expires in 24 hours. If you did not create an account, \
             ignore this message.\n"
        ),
    }
}

pub fn reset_password(to: &str, display_name: &str, public_url: &str, token: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "Reset your password".to_owned(),
        body: format!(
            "Hello {display_name},\n\n\
             Someone (hopefully you) asked to reset your Companion password. Choose a new \
             one here:\n\n\
             {public_url}/#/reset-password?token={token}\n\n\
             The link works once and expires in 1 hour. Resetting signs you out everywhere. \
             If you did not ask for this, ignore this message: your password is unchanged.\n"
        ),
    }
}
