"""The pages' words, Japanese first, English available (chosen with the language switch)."""

from __future__ import annotations

from collections.abc import Callable

_CATALOGUE: dict[str, tuple[str, str]] = {
    # key: (Japanese, English)
    "app": ("Mamoru", "Mamoru"),
    "language": ("言語", "Language"),
    "switch_language": ("English", "日本語"),
    "nav_wallet": ("ウォレット", "Wallet"),
    "nav_pay": ("支払う", "Pay"),
    "nav_top_up": ("チャージ", "Top up"),
    "nav_account": ("アカウント", "Account"),
    "sign_out": ("サインアウト", "Sign out"),
    "sign_in": ("サインイン", "Sign in"),
    "register": ("新規登録", "Register"),
    "email": ("メールアドレス", "Email address"),
    "password": ("パスワード", "Password"),
    "new_password": ("新しいパスワード", "New password"),
    "display_name": ("表示名 (任意)", "Display name (optional)"),
    "password_hint": (
        "12文字以上の推測されにくいパスワード",
        "At least 12 characters, hard to guess",
    ),
    "verify_title": ("メールアドレスの確認", "Verify your email address"),
    "verify_lead": (
        "{email} に届いた確認コードを入力してください。",
        "Enter the verification code sent to {email}.",
    ),
    "code": ("コード", "Code"),
    "confirm": ("確認する", "Confirm"),
    "verified": (
        "メールアドレスを確認しました。サインインしてください。",
        "Your email address is verified. Please sign in.",
    ),
    "sign_in_passkey": ("パスキーでサインイン", "Sign in with a passkey"),
    "or": ("または", "or"),
    "no_account": ("アカウントをお持ちでない方", "New to Mamoru?"),
    "forgot": ("パスワードをお忘れの方", "Forgot your password?"),
    "second_factor": ("2段階認証", "Second step"),
    "use_passkey": ("パスキーを使う", "Use your passkey"),
    "totp_code": ("認証アプリのコード", "Authenticator app code"),
    "email_code": ("メールで届いたコード", "Code from your email"),
    "send_email_code": ("コードをメールで送る", "Email me a code"),
    "code_sent": ("コードを送信しました。", "We sent you a code."),
    "recovery_code": ("リカバリーコード", "Recovery code"),
    "account_title": ("アカウントとセキュリティ", "Account and security"),
    "passkeys": ("パスキー", "Passkeys"),
    "add_passkey": ("この端末にパスキーを追加", "Add a passkey on this device"),
    "passkey_name": ("パスキーの名前", "Passkey name"),
    "passkey_added": ("パスキーを追加しました。", "Your passkey was added."),
    "suspended": ("停止中", "Suspended"),
    "remove": ("削除", "Remove"),
    "authenticator": ("認証アプリ", "Authenticator app"),
    "add_authenticator": ("認証アプリを設定", "Set up an authenticator app"),
    "authenticator_lead": (
        "認証アプリでQRコードを読み取るか、キーを入力し、表示されたコードを入力してください。",
        "Scan the QR code with your authenticator app or type the key, then enter its code.",
    ),
    "secret_key": ("キー", "Key"),
    "qr_of_key": ("認証アプリ用のQRコード", "QR code for your authenticator app"),
    "recovery_codes": ("リカバリーコード", "Recovery codes"),
    "recovery_lead": (
        "この画面でしか表示されません。安全な場所に保管してください。",
        "They are shown only now. Keep them somewhere safe.",
    ),
    "new_recovery_codes": ("リカバリーコードを作り直す", "Make new recovery codes"),
    "none_yet": ("まだありません。", "None yet."),
    "sessions": ("サインイン中のセッション", "Signed-in sessions"),
    "devices": ("端末", "Devices"),
    "this_session": ("この端末", "This browser"),
    "end_session": ("サインアウトさせる", "Sign out"),
    "forget_device": ("端末を解除", "Forget device"),
    "last_seen": ("最終利用", "Last seen"),
    "wallet_title": ("ウォレット", "Wallet"),
    "balance": ("残高", "Balance"),
    "history": ("利用履歴", "History"),
    "no_wallet": (
        "まだウォレットがありません。",
        "You have no wallet yet.",
    ),
    "open_wallet": ("ウォレットを作成", "Open a wallet"),
    "when": ("日時", "When"),
    "what": ("内容", "What"),
    "amount": ("金額", "Amount"),
    "balance_after": ("残高", "Balance"),
    "kind_top_up": ("チャージ", "Top-up"),
    "kind_payment": ("支払い", "Payment"),
    "kind_refund": ("返金", "Refund"),
    "kind_compensation": ("補償", "Compensation"),
    "kind_payout": ("払い出し", "Payout"),
    "kind_top_up_reversal": ("チャージ取消", "Top-up reversed"),
    "kind_other": ("その他", "Other"),
    "not_me": ("身に覚えがない", "This wasn't me"),
    "top_up_title": ("カードからチャージ", "Top up from a card"),
    "card": ("カード", "Card"),
    "new_card": ("新しいカードの番号", "New card number"),
    "card_sandbox": (
        "サンドボックス: 4242 4242 4242 4242 などのテスト番号が使えます。",
        "Sandbox: test numbers such as 4242 4242 4242 4242 work.",
    ),
    "top_up": ("チャージする", "Top up"),
    "topped_up": ("チャージしました。", "Your wallet was topped up."),
    "pay_title": ("支払いコード", "Payment code"),
    "pay_lead": (
        "レジでバーコードまたはQRコードを読み取ってもらってください。コードは期限前に自動で更新されます。",
        "Show the barcode or QR code at the register. The code renews itself before it expires.",
    ),
    "payment_qr": ("支払い用QRコード", "Payment QR code"),
    "payment_barcode": ("支払い用バーコード", "Payment barcode"),
    "expires": ("有効期限", "Expires"),
    "step_up_title": ("本人確認", "Confirm it's you"),
    "step_up_lead": (
        "ウォレットを使うには、もう一度本人確認が必要です。",
        "Confirm it's you again to use your wallet.",
    ),
    "again_title": ("もう一度サインイン", "Sign in again"),
    "again_lead": (
        "ウォレットを使うには、パスキーか認証アプリでの確認が必要です"
        " (メールのコードやリカバリーコードでは使えません)。"
        "追加してから、それを使ってサインインし直してください。",
        "The wallet opens only after a passkey or an authenticator app confirms it's you"
        " (never an emailed code or a recovery code). Add one, then sign in again with it.",
    ),
    "forgot_title": ("パスワードの再設定", "Reset your password"),
    "forgot_lead": (
        "登録済みであれば、再設定用のリンクをメールでお送りします。",
        "If the address is registered, we will email you a link to reset your password.",
    ),
    "send_link": ("リンクを送る", "Send the link"),
    "link_sent": (
        "登録済みのアドレスであれば、メールを送信しました。",
        "If the address is registered, the email is on its way.",
    ),
    "reset_title": ("新しいパスワードの設定", "Choose a new password"),
    "reset_lead": (
        "新しいパスワードを設定すると、ほかの端末のサインインはすべて終了します。",
        "Setting a new password signs you out everywhere else.",
    ),
    "set_password": ("パスワードを設定", "Set the password"),
    "reset_done": (
        "パスワードを変更しました。新しいパスワードでサインインしてください。",
        "Your password was changed. Sign in with the new one.",
    ),
    "freeze_title": ("連絡先変更の停止", "Stop the contact change"),
    "freeze_lead": (
        "ご自身で行っていない連絡先の変更を停止し、アカウントを保護します。",
        "Stop a contact change you did not make and protect your account.",
    ),
    "freeze": ("変更を停止する", "Stop the change"),
    "frozen": (
        "連絡先の変更を停止しました。パスワードの再設定をおすすめします。",
        "The contact change was stopped. We recommend resetting your password.",
    ),
    "not_me_title": ("身に覚えのない操作", "Something you didn't do"),
    "security_not_me_lead": (
        "この通知の操作に心当たりがない場合は、すぐにパスワードを再設定してください。"
        "再設定すると、ほかのすべての端末でサインアウトされます。",
        "If you did not do what this notice describes, reset your password now. "
        "Resetting it signs you out on every other device.",
    ),
    "wallet_not_me_lead": (
        "この取引に心当たりがない場合は報告してください。ウォレットは調査のため一時停止されます。",
        "Report this movement if you did not make it. Your wallet is paused while we look into it.",
    ),
    "movement": ("取引ID", "Movement"),
    "details": ("詳しい状況 (任意)", "What happened (optional)"),
    "report": ("報告する", "Report"),
    "reported": (
        "報告を受け付けました。受付番号: {case}",
        "Thank you, we received your report. Case: {case}",
    ),
    "error_title": ("エラー", "Something went wrong"),
    "err_invalid": ("入力内容を確認してください。", "Please check what you entered."),
    "err_unauthenticated": (
        "メールアドレスまたはパスワード、コードが正しくありません。",
        "The address, password or code is not right.",
    ),
    "err_too_many": (
        "試行回数が多すぎます。しばらくしてからお試しください。",
        "Too many attempts. Please try again later.",
    ),
    "err_unavailable": (
        "ただいま処理できません。しばらくしてからお試しください。",
        "We cannot do this right now. Please try again shortly.",
    ),
    "err_signed_out": ("サインインしてください。", "Please sign in."),
    "err_channel_suspended": (
        "この方法でのチャージは現在停止しています。",
        "Top-ups this way are paused for now.",
    ),
    "err_other": (
        "処理できませんでした。内容を確認してもう一度お試しください。",
        "That did not work. Please check and try again.",
    ),
    "err_passkey": ("パスキーを使えませんでした。", "The passkey could not be used."),
    "err_link": (
        "リンクが無効か期限切れです。",
        "This link is not valid or has expired.",
    ),
    "field": ("項目", "Field"),
    "skip": ("本文へ移動", "Skip to content"),
}
_INDEX = {"ja": 0, "en": 1}


def translator(lang: str) -> Callable[..., str]:
    index = _INDEX.get(lang, 0)

    def t(key: str, **values: object) -> str:
        text = _CATALOGUE.get(key, (key, key))[index]
        return text.format(**values) if values else text

    return t


def error_key(reason: str) -> str:
    """The catalogue key telling a refusal's reason in the person's words."""
    known = {
        "invalid",
        "unauthenticated",
        "too_many",
        "unavailable",
        "signed_out",
        "channel_suspended",
    }
    lowered = reason.lower()
    if lowered in known:
        return f"err_{lowered}"
    if "token" in lowered or "expired" in lowered:
        return "err_link"
    if lowered.startswith("weak") or "password" in lowered:
        return "err_invalid"
    return "err_other"
