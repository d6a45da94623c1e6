package main

import "io"

func runOffers(args []string, out io.Writer) int { return 2 }

func runValidateCredentials(args []string, out io.Writer) int { return 2 }
