#!/usr/bin/perl
# Proxmox VE's own signing code, on the modules Proxmox VE uses (Crypt::OpenSSL::RSA,
# Digest::SHA, MIME::Base64, URI::Escape): PVE::Ticket::assemble_rsa_ticket and
# assemble_csrf_prevention_token, with PVE::AccessControl's secret of pve-www.key. The one
# change: the time is an argument (Proxmox VE takes time()), so tests can make old tickets.
#
#   pve_sign.pl ticket PRIVATE_KEY_PEM USERID UNIX_TIME
#   pve_sign.pl csrf WWW_KEY USERID UNIX_TIME
#   pve_sign.pl csrf-legacy WWW_KEY USERID UNIX_TIME   (the SHA-1 tokens of older proxies)
use strict;
use warnings;

use Crypt::OpenSSL::RSA;
use Digest::SHA;
use MIME::Base64;
use URI::Escape;

sub file_get_contents {
    my ($filename) = @_;
    open(my $fh, '<', $filename) or die "unable to open '$filename' - $!\n";
    local $/;
    my $content = <$fh>;
    close($fh);
    return $content;
}

my ($what, $file, $userid, $time) = @ARGV;
die "usage: $0 ticket|csrf|csrf-legacy FILE USERID TIME\n" if !defined($time);
my $timestamp = sprintf("%08X", $time);

if ($what eq 'ticket') {
    my $rsa_priv = Crypt::OpenSSL::RSA->new_private_key(file_get_contents($file));
    my $plain = "PVE:" . uri_escape($userid, ':') . ":" . $timestamp;
    print $plain . "::" . encode_base64($rsa_priv->sign($plain), '');
} elsif ($what eq 'csrf') {
    my $secret = Digest::SHA::hmac_sha256_base64(file_get_contents($file));
    print "$timestamp:" . Digest::SHA::hmac_sha256_base64("$timestamp:$userid", $secret);
} elsif ($what eq 'csrf-legacy') {
    my $secret = Digest::SHA::sha1_base64(file_get_contents($file));
    print "$timestamp:" . Digest::SHA::hmac_sha1_base64("$timestamp:$userid", $secret);
} else {
    die "unknown: $what\n";
}
