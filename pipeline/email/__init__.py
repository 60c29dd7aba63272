"""The email channel: messages, templates, and one sink per Tyk email backend.

    message.py          EmailRequest (the job a delivery carries) and the MIME message built from it
    templates.py        the subject, text and HTML of each email, from templates/email/
    filters.py          the Jinja2 filters templates use (masked keys, amounts, times)
    smtp.py             SMTP through a small pool of aiosmtplib connections
    http_provider.py    what SendGrid, Mailgun, Mandrill and SES sinks share (aiohttp, outcomes)
    sendgrid.py, mailgun.py, mandrill.py, ses.py   one HTTP API each
    aws.py              SES's credentials: static keys, or botocore's chain, refreshed off the loop
    factory.py          EmailSink, and the sink that ``email_backend.code`` names

Every sink's ``send`` returns when the provider accepted the message and raises
RetriableDeliveryError or PermanentDeliveryError otherwise.
"""
