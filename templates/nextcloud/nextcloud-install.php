<?php
// Managed by placard (role nextcloud): runs `occ maintenance:install` of the release
// in folder ROOT with the database and admin passwords from the environment, so that
// neither is ever on a command line (/proc/PID/cmdline, which every local user can
// read, e.g. with ps).
//
//   NEXTCLOUD_DATABASE_PASSWORD=... NEXTCLOUD_ADMIN_PASSWORD=... \
//       php nextcloud-install.php ROOT [occ's arguments without the two passwords]
//
// occ accepts the passwords only as the options --database-pass and --admin-pass, or
// asks for them on a terminal. occ is the release's console.php, a Symfony Console
// application that reads its options from PHP's $argv: this script adds the two
// options to $argv inside this PHP process, removes the variables from its
// environment (programs occ starts do not inherit them), and runs console.php as
// the release's own occ does.

if ($argc < 3) {
    fwrite(STDERR, "usage: php nextcloud-install.php ROOT OCC-ARGUMENTS...\n");
    exit(2);
}
$root = $argv[1];
$secret_options = [
    'NEXTCLOUD_DATABASE_PASSWORD' => '--database-pass',
    'NEXTCLOUD_ADMIN_PASSWORD' => '--admin-pass',
];
$added = [];
foreach ($secret_options as $variable => $option) {
    $value = getenv($variable);
    if ($value === false || $value === '') {
        fwrite(STDERR, "nextcloud-install.php: $variable is not set\n");
        exit(2);
    }
    $added[] = "$option=$value";
    putenv($variable);
    unset($_ENV[$variable], $_SERVER[$variable]);
}
if (!is_file("$root/console.php") || !chdir($root)) {
    fwrite(STDERR, "nextcloud-install.php: $root is not a Nextcloud release (no console.php)\n");
    exit(2);
}
$argv = array_merge(["$root/occ"], array_slice($argv, 2), $added);
$argc = count($argv);
$_SERVER['argv'] = $argv;
$_SERVER['argc'] = $argc;
unset($added, $value, $secret_options, $variable, $option);
require "$root/console.php";
